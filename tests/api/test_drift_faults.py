"""Drift against faults: an INVALID index is a difference; an expected schema that cannot be built is a 409 that
names the file, on both ``GET /tenants/{id}/drift`` and ``GET /migrations/{v}/schema``, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path

import asyncpg
import httpx

from service.config import Settings
from service.store.db import with_database
from tests.drift_support import drift_of, execute

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]


async def test_an_invalid_index_is_drift(
    make_settings: MakeSettings, migration_dir: MigrationDir, serve: Serve, pg_url: str
) -> None:
    settings = make_settings(migration_dir("ok"))
    database = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
        assert (await drift_of(client, "acme"))["clean"] is True
        # What a half-failed CREATE UNIQUE INDEX CONCURRENTLY leaves: an index of the expected name, INVALID.
        await execute(
            pg_url,
            database,
            "DROP INDEX accounts_email_idx; INSERT INTO accounts (email) VALUES ('a@x'), ('a@x')",
        )
        conn = await asyncpg.connect(with_database(pg_url, database))
        try:
            with suppress(asyncpg.UniqueViolationError):
                await conn.execute('CREATE UNIQUE INDEX CONCURRENTLY "accounts_email_idx" ON "accounts" ("email")')
            assert (
                await conn.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_email_idx'::regclass")
                is False
            )
        finally:
            await conn.close()
        body = await drift_of(client, "acme")
        assert body["clean"] is False
        assert body["differences"] == [
            {
                "object": "index",
                "name": "public.accounts_email_idx",
                "change": "changed",
                "expected": {"valid": True},
                "actual": {"valid": False},
            }
        ]
        status = (await client.get("/tenants/acme/schema")).json()
        assert status["status"] == "drifted"
        swept = await client.post("/drift-checks")  # the fleet's sweep sees it too
        assert swept.status_code == 200, swept.text
        assert (swept.json()["checked"], swept.json()["drifted"]) == (1, ["acme"])


async def test_an_unbuildable_expected_schema_is_409_naming_the_file(
    make_settings: MakeSettings, migration_dir: MigrationDir, serve: Serve, pg_url: str
) -> None:
    directory = migration_dir("ok")
    settings = make_settings(directory)
    database = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
    # A file that runs in the tenant (which has a table made by hand) but not in an empty database.
    await execute(pg_url, database, "CREATE TABLE extra (id int)")
    (directory / "0002_extra.sql").write_text("ALTER TABLE extra ADD COLUMN note text;\n")
    async with serve(settings) as client:
        r = await client.post("/tenants/acme/migrate")
        assert r.status_code == 200, r.text
        for path in ("/tenants/acme/drift", "/migrations/2/schema"):
            r = await client.get(path)
            assert r.status_code == 409, r.text
            body = r.json()
            assert body["code"] == "expected_schema_unbuildable"
            assert body["file"] == "0002_extra.sql"
            assert body["version"] == 2
            assert "0002_extra.sql" in body["detail"]
        # The versions below it are still served.
        assert (await client.get("/migrations/1/schema")).status_code == 200
        # The fleet's sweep is not a 500 either: the tenant is skipped with the same code, the file named.
        swept = await client.post("/drift-checks")
        assert swept.status_code == 200, swept.text
        assert swept.json()["checked"] == 0
        (skipped,) = swept.json()["skipped"]
        assert (skipped["tenant"], skipped["code"]) == ("acme", "expected_schema_unbuildable")
        assert "0002_extra.sql" in skipped["message"]
