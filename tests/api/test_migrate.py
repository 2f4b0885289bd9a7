"""Upgrading existing tenants (POST /tenants/{id}/migrate) and how files run: no-transaction files, enum values,
failures that leave the tenant at its last committed version, concurrency, and the system endpoints."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.history.migrations import load
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


async def tenant_fetch(pg_url: str, database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def history_versions(pg_url: str, database: str) -> list[int]:
    rows = await tenant_fetch(pg_url, database, "SELECT version FROM _tenants.history ORDER BY version")
    return [r["version"] for r in rows]


def partial(migration_dir: MigrationDir, name: str, keep: int) -> tuple[Path, list[Path]]:
    """A copy of a fixture set with only its first ``keep`` files; returns the held-back files too."""
    d = migration_dir(name)
    held = d.parent / f"{name}_later"
    held.mkdir()
    later = []
    for path in sorted(d.glob("*.sql"))[keep:]:
        later.append(held / path.name)
        shutil.move(path, held / path.name)
    return d, later


def release(d: Path, files: list[Path]) -> None:
    for path in files:
        shutil.copy(path, d / path.name)


# -- how files run on creation ---------------------------------------------------------------------------------------


async def test_no_transaction_file_on_creation(make_settings: MakeSettings, serve: Serve, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "no_tx")
    database = f"{settings.db_prefix}idx"
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "idx"})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 2
        items = (await client.get("/migrations")).json()["items"]
        assert [(m["version"], m["transactional"]) for m in items] == [(0, True), (1, False), (2, True)]
        schema = (await client.get("/tenants/idx/schema")).json()
        assert schema["status"] == "up_to_date"
        assert [a["version"] for a in schema["applied"]] == [0, 1, 2]
    indexes = await tenant_fetch(
        pg_url,
        database,
        """SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE c.relname IN ('accounts_lower_email_idx', 'accounts_id_email_idx')""",
    )
    assert sorted((r["relname"], r["indisvalid"]) for r in indexes) == [
        ("accounts_id_email_idx", True),
        ("accounts_lower_email_idx", True),
    ]
    assert await history_versions(pg_url, database) == [0, 1, 2]
    ms = load(FIXTURES / "no_tx")
    rows = await tenant_fetch(pg_url, database, "SELECT sha256 FROM _tenants.history WHERE version = 1")
    assert rows[0]["sha256"] == ms.by_version[1].sha256
    columns = await tenant_fetch(
        pg_url, database, "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts'"
    )
    assert "tier" in {c["column_name"] for c in columns}


async def test_enum_value_added_then_used_on_creation(make_settings: MakeSettings, serve: Serve, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "enum_add")
    database = f"{settings.db_prefix}enum"
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "enum"})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 3
        assert (await client.get("/tenants/enum/schema")).json()["status"] == "up_to_date"
    rows = await tenant_fetch(pg_url, database, "INSERT INTO accounts (email) VALUES ('a@b.c') RETURNING plan::text")
    assert rows[0]["plan"] == "team"
    assert await history_versions(pg_url, database) == [0, 1, 2, 3]


# -- migrate ---------------------------------------------------------------------------------------------------------


async def test_enum_upgrade_path(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d, later = partial(migration_dir, "enum_add", 2)
    settings = make_settings(d)
    database = f"{settings.db_prefix}up"
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "up"})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 1
        nothing = await client.post("/tenants/up/migrate")
        assert nothing.status_code == 200, nothing.text
        assert nothing.json()["status"] == "up_to_date"

    release(d, later)
    async with serve(settings) as client:
        tenant = (await client.get("/tenants/up")).json()
        assert (tenant["version"], tenant["latest_version"]) == (1, 3)
        before = (await client.get("/tenants/up/schema")).json()
        assert before["status"] == "behind"
        assert [p["version"] for p in before["pending"]] == [2, 3]

        r = await client.post("/tenants/up/migrate")
        assert r.status_code == 200, r.text
        after = r.json()
        assert after["status"] == "up_to_date"
        assert after["current_version"] == after["latest_version"] == 3
        assert after["pending"] == []
        assert [a["version"] for a in after["applied"]] == [0, 1, 2, 3]
        assert (await client.get("/tenants/up")).json()["version"] == 3
    assert await history_versions(pg_url, database) == [0, 1, 2, 3]
    rows = await tenant_fetch(
        pg_url,
        database,
        "SELECT column_default FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'plan'",
    )
    assert "team" in rows[0]["column_default"]


async def test_no_transaction_upgrade_path(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d, later = partial(migration_dir, "no_tx", 1)
    settings = make_settings(d)
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "nt"})).status_code == 201
    release(d, later)
    async with serve(settings) as client:
        r = await client.post("/tenants/nt/migrate", json={})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "up_to_date"
    assert await history_versions(pg_url, f"{settings.db_prefix}nt") == [0, 1, 2]


async def test_failing_migrate_keeps_last_committed_version_until_fixed(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d, later = partial(migration_dir, "enum_add", 2)
    settings = make_settings(d)
    database = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201

    # 0002 adds an enum value (its transaction commits on its own); 0003 fails on its second statement.
    release(d, later[:1])
    (d / "0003_use_team.sql").write_text(
        'CREATE TABLE "teams" ("id" serial PRIMARY KEY);\n'  # 1
        "--> statement-breakpoint\n"  # 2
        'ALTER TABLE "accounts"\n'  # 3
        '  ADD COLUMN "team_id" integer REFERENCES "no_teams"("id");\n'  # 4
    )
    async with serve(settings) as client:
        r = await client.post("/tenants/acme/migrate")
        body = assert_problem(r, 500, "migration_failed")
        assert (body["version"], body["file"], body["statement"], body["line"], body["sqlstate"]) == (
            3,
            "0003_use_team.sql",
            2,
            3,
            "42P01",
        )

        tenant = (await client.get("/tenants/acme")).json()
        assert tenant["state"] == "ready"  # still usable at its last committed version
        assert tenant["version"] == 2
        assert tenant["error"]["code"] == "migration_failed"
        assert tenant["error"]["version"] == 3
        assert tenant["error"]["statement"] == 2

        schema = (await client.get("/tenants/acme/schema")).json()
        assert schema["status"] == "failed"
        assert schema["current_version"] == 2
        assert [p["version"] for p in schema["pending"]] == [3]
        assert schema["error"]["file"] == "0003_use_team.sql"
        assert schema["error"]["sqlstate"] == "42P01"

        # A retry with the same broken file fails the same way and changes nothing.
        assert_problem(await client.post("/tenants/acme/migrate"), 500, "migration_failed")
        assert (await client.get("/tenants/acme")).json()["version"] == 2

    assert await history_versions(pg_url, database) == [0, 1, 2]
    # The failing file's first statement was rolled back with it.
    rows = await tenant_fetch(pg_url, database, "SELECT to_regclass('teams') IS NULL AS gone")
    assert rows[0]["gone"] is True
    labels = await tenant_fetch(pg_url, database, "SELECT unnest(enum_range(NULL::plan))::text AS v")
    assert [r["v"] for r in labels] == ["free", "pro", "team"]

    release(d, later[1:])  # the real 0003
    async with serve(settings) as client:
        r = await client.post("/tenants/acme/migrate")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "up_to_date"
        assert r.json()["error"] is None
        tenant = (await client.get("/tenants/acme")).json()
        assert (tenant["version"], tenant["error"]) == (3, None)
        schema = (await client.get("/tenants/acme/schema")).json()
        assert (schema["status"], schema["error"]) == ("up_to_date", None)
    assert await history_versions(pg_url, database) == [0, 1, 2, 3]


async def test_failing_file_in_one_transaction_rolls_back_the_whole_batch(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d = migration_dir("ok")
    settings = make_settings(d)
    database = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
    (d / "0002_fine.sql").write_text('CREATE TABLE "fine" ("id" integer);\n')
    (d / "0003_broken.sql").write_text('SELECT * FROM "nowhere";\n')
    async with serve(settings) as client:
        body = assert_problem(await client.post("/tenants/acme/migrate"), 500, "migration_failed")
        assert (body["version"], body["statement"], body["line"]) == (3, 1, 1)
        tenant = (await client.get("/tenants/acme")).json()
        assert (tenant["state"], tenant["version"]) == ("ready", 1)
    # 0002 ran in the same transaction as the failing 0003: nothing of it remains.
    assert await history_versions(pg_url, database) == [0, 1]
    rows = await tenant_fetch(pg_url, database, "SELECT to_regclass('fine') IS NULL AS gone")
    assert rows[0]["gone"] is True


async def test_two_concurrent_migrates_apply_each_file_once(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d, later = partial(migration_dir, "no_tx", 1)
    settings = make_settings(d)
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "race"})).status_code == 201
    release(d, later)
    async with serve(settings) as client:
        answers = await asyncio.gather(*(client.post("/tenants/race/migrate") for _ in range(2)))
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert all(r.json()["status"] == "up_to_date" for r in answers)
        assert all(r.json()["current_version"] == 2 for r in answers)
    rows = await tenant_fetch(
        pg_url, f"{settings.db_prefix}race", "SELECT version, count(*) AS n FROM _tenants.history GROUP BY version"
    )
    assert sorted((r["version"], r["n"]) for r in rows) == [(0, 1), (1, 1), (2, 1)]


async def test_migrate_refuses_an_edited_history(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d = migration_dir("ok")
    settings = make_settings(d)
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
    (d / "0001_account_name.sql").write_text('ALTER TABLE "accounts" ADD COLUMN "name" varchar(100);\n')
    (d / "0002_more.sql").write_text('ALTER TABLE "accounts" ADD COLUMN "more" text;\n')
    async with serve(settings) as client:
        schema = (await client.get("/tenants/acme/schema")).json()
        assert schema["status"] == "modified"
        assert [m["version"] for m in schema["modified"]] == [1]
        body = assert_problem(await client.post("/tenants/acme/migrate"), 409, "history_mismatch")
        assert body["modified"] == [1]
    assert await history_versions(pg_url, f"{settings.db_prefix}acme") == [0, 1]  # nothing applied


async def test_migrate_of_a_failed_or_unknown_tenant(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    async with serve(make_settings(migration_dir("failing_stmt"))) as client:
        assert_problem(await client.post("/tenants", json={"id": "bad"}), 500, "migration_failed")
        body = assert_problem(await client.post("/tenants/bad/migrate"), 409, "tenant_not_ready")
        assert body["state"] == "failed"
        assert_problem(await client.post("/tenants/ghost/migrate"), 404, "tenant_not_found")


# -- system endpoints ------------------------------------------------------------------------------------------------


async def test_migrations_health_and_readiness(make_settings: MakeSettings, serve: Serve) -> None:
    async with serve(make_settings(FIXTURES / "enum_add")) as client:
        r = await client.get("/migrations")
        assert r.status_code == 200
        ms = load(FIXTURES / "enum_add")
        assert r.json() == {
            "latest_version": 3,
            "items": [
                {
                    "version": m.version,
                    "name": m.name,
                    "sha256": m.sha256,
                    "transactional": m.transactional,
                    "file": m.file,
                    "tool": None,
                    "tool_version": None,
                }
                for m in ms.migrations
            ],
            "warnings": [],
        }
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert [c["server"] for c in ready.json()["connections"]] == ["default"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/migrations", "/tenants"])
async def test_system_endpoints_are_json(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
