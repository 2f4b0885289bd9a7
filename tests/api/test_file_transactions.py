"""Files that manage their own transactions (BEGIN/COMMIT, the no-transaction marker) on existing tenants: a
failure half-way leaves the tenant ``failed`` at that file and part, and a retry resumes after what committed,
never running it twice and never recording the file applied over an INVALID index. Extensions: present on the
embedded server, named with the server when missing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.errors import MigrationFailed
from service.history import migrations, runner
from service.store.db import with_database
from tests.api.test_migrate import assert_problem, tenant_fetch

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

HALF_FAILING = """-- tenants:no-transaction
CREATE TABLE "codes" ("id" serial PRIMARY KEY, "code" text NOT NULL);
INSERT INTO "codes" ("code") VALUES ('a'), ('a');
INSERT INTO "codes" ("code") VALUES ('b');
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "codes_code_idx" ON "codes" ("code");
"""

MIXED = """ALTER TABLE "accounts" ADD COLUMN "score" integer;--> statement-breakpoint
INSERT INTO "accounts" ("email", "score") VALUES ('a@x.test', 1), ('b@x.test', -1);--> statement-breakpoint
COMMIT;--> statement-breakpoint
CREATE INDEX CONCURRENTLY "accounts_score_idx" ON "accounts" ("score");--> statement-breakpoint
INSERT INTO "accounts" ("email", "score") VALUES ('c@x.test', 2);--> statement-breakpoint
BEGIN;--> statement-breakpoint
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_score_positive" CHECK ("score" > 0);
"""


async def _schema(client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    r = await client.get(f"/tenants/{tenant}/schema")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _invalid_indexes(pg_url: str, database: str) -> list[str]:
    rows = await tenant_fetch(
        pg_url,
        database,
        "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE NOT indisvalid ORDER BY 1",
    )
    return [r["name"] for r in rows]


async def test_a_half_failed_no_transaction_file_is_never_marked_applied(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    folder = migration_dir("ok")
    async with serve(make_settings(folder)) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
    (folder / "0002_codes.sql").write_text(HALF_FAILING)
    settings = make_settings(folder)
    database = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        first = assert_problem(await client.post("/tenants/acme/migrate"), 500, "migration_failed")
        assert (first["file"], first["statement"], first["line"], first["sqlstate"]) == (
            "0002_codes.sql",
            4,
            5,
            "23505",
        )
        assert (first["part"], first["parts"]) == (1, 1)
        schema = await _schema(client, "acme")
        assert (schema["status"], schema["current_version"]) == ("failed", 1)
        assert (schema["error"]["file"], schema["error"]["statement"]) == ("0002_codes.sql", 4)
        assert await _invalid_indexes(pg_url, database) == ["codes_code_idx"]

        # the retry starts at the failed statement: the INSERTs are not run again, the INVALID index is dropped and
        # built again (IF NOT EXISTS would skip it), fails the same way, and the file stays unrecorded
        again = assert_problem(await client.post("/tenants/acme/migrate"), 500, "migration_failed")
        assert (again["statement"], again["sqlstate"]) == (4, "23505")
        codes = "SELECT code FROM codes ORDER BY id"
        assert [r["code"] for r in await tenant_fetch(pg_url, database, codes)] == ["a", "a", "b"]
        history = await tenant_fetch(pg_url, database, "SELECT version FROM _tenants.history ORDER BY 1")
        assert [r["version"] for r in history] == [0, 1]
        assert (await _schema(client, "acme"))["status"] == "failed"

        # the data fixed by hand, the retry finishes the file: one valid index, each row once, recorded once
        await tenant_fetch(pg_url, database, "DELETE FROM codes WHERE id = 2")
        r = await client.post("/tenants/acme/migrate")
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["current_version"]) == ("up_to_date", 2)
        assert [r["code"] for r in await tenant_fetch(pg_url, database, codes)] == ["a", "b"]
        assert await _invalid_indexes(pg_url, database) == []
        assert await tenant_fetch(pg_url, database, "SELECT * FROM _tenants.progress") == []


async def test_a_file_that_commits_half_way_resumes_in_its_failed_part(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    folder = migration_dir("ok")
    async with serve(make_settings(folder)) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
    (folder / "0002_scores.sql").write_text(MIXED)
    settings = make_settings(folder)
    database = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        listed = (await client.get("/migrations")).json()["items"]
        assert listed[2]["transactional"] is False
        failed = assert_problem(await client.post("/tenants/acme/migrate"), 500, "migration_failed")
        assert (failed["statement"], failed["line"], failed["part"], failed["parts"]) == (7, 7, 3, 3)
        schema = await _schema(client, "acme")
        assert (schema["status"], schema["error"]["part"]) == ("failed", 3)
        rows = "SELECT email FROM accounts WHERE email LIKE '%@x.test' ORDER BY id"
        assert [r["email"] for r in await tenant_fetch(pg_url, database, rows)] == ["a@x.test", "b@x.test", "c@x.test"]

        # an edited file cannot be resumed: what ran of it no longer matches
        path = folder / "0002_scores.sql"
        path.write_text(MIXED.replace("> 0", ">= -1"))
    async with serve(make_settings(folder)) as client:
        edited = assert_problem(await client.post("/tenants/acme/migrate"), 409, "history_mismatch")
        assert "0002_scores.sql is half-applied" in edited["detail"]
    path.write_text(MIXED)
    async with serve(make_settings(folder)) as client:
        await tenant_fetch(pg_url, database, "UPDATE accounts SET score = 5 WHERE score < 0")
        done = await client.post("/tenants/acme/migrate")
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "up_to_date"
        assert [r["email"] for r in await tenant_fetch(pg_url, database, rows)] == ["a@x.test", "b@x.test", "c@x.test"]
        check = "SELECT conname FROM pg_constraint WHERE conname = 'accounts_score_positive'"
        assert len(await tenant_fetch(pg_url, database, check)) == 1


@pytest.fixture
async def scratch(pg_url: str, tag: str, cleanup: None) -> Any:
    database = f"t{tag}_ext"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    conn = await asyncpg.connect(with_database(pg_url, database))
    yield conn
    await conn.close()


async def test_extensions_work_and_a_missing_one_is_named_with_its_server(
    scratch: asyncpg.Connection, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    # pgvector ships with the embedded PostgreSQL, not with Debian's PostgreSQL 15 (CI's second server)
    vector = bool(await scratch.fetchval("SELECT true FROM pg_available_extensions WHERE name = 'vector'"))
    (folder / "0000_ext.sql").write_text(
        ('CREATE EXTENSION IF NOT EXISTS "vector";\n' if vector else "") + "CREATE EXTENSION IF NOT EXISTS pg_trgm;\n"
        "CREATE EXTENSION IF NOT EXISTS citext;\n"
        f"CREATE TABLE items (name citext, embedding {'vector(3)' if vector else 'real[]'});\n"
        "CREATE INDEX items_name_trgm ON items USING gin ((name::text) gin_trgm_ops);\n"
    )
    await runner.apply(scratch, migrations.plan(migrations.load(folder).migrations))
    names = {r["extname"] for r in await scratch.fetch("SELECT extname FROM pg_extension")}
    assert {"pg_trgm", "citext"} <= names
    assert ("vector" in names) == vector

    (folder / "0001_more.sql").write_text("SELECT 1;\n\nCREATE EXTENSION postgis_not_shipped;\n")
    more = migrations.load(folder).by_version[1]
    with pytest.raises(MigrationFailed) as caught:
        await runner.apply(scratch, migrations.plan([more]), ensure_history=False)
    details = caught.value.details
    version = scratch.get_server_version()
    assert details["extension"] == "postgis_not_shipped"
    assert details["server"].endswith(f"PostgreSQL {version.major}.{version.minor}")
    assert (details["statement"], details["line"]) == (2, 3)
    assert caught.value.message.startswith(
        '0001_more.sql: extension "postgis_not_shipped" is not available on the server ('
    )
