"""The domain core against a real PostgreSQL, below the HTTP layer: the runner, per-tenant locks, timeouts, lost
connections, interrupted background work and recovery, and the catalog's self-upgrade."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.config import Settings
from service.errors import DatabaseUnavailable, MigrationFailed, TenantBusy, TenantExists
from service.history import runner
from service.history import table as history
from service.history.migrations import load, plan
from service.store import catalog
from service.store.db import Server, with_database
from service.tenants import queue, recover
from service.tenants.create import CreateRequest
from service.tenants.provisioner import Provisioner

MakeSettings = Callable[..., Settings]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"


@asynccontextmanager
async def provisioner_for(settings: Settings) -> AsyncIterator[Provisioner]:
    assert settings.database_url is not None
    server = Server(settings.database_url.get_secret_value(), settings.catalog_database, settings.pool_size)
    await server.open()
    try:
        async with server.catalog() as conn:
            await catalog.upgrade(conn)
        provisioner = Provisioner(server, load(settings.migrations_dir, settings.seeds_path), settings)
        try:
            yield provisioner
        finally:
            await provisioner.close()
    finally:
        await server.close()


def write_set(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


async def databases(pg_url: str, prefix: str) -> set[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
    finally:
        await conn.close()
    return {r["datname"] for r in rows}


async def until(pg_url: str, query: str, *args: Any, seconds: float = 20) -> None:
    """Poll ``query`` on the admin database until it returns something truthy."""
    admin = await asyncpg.connect(pg_url)
    try:
        async with asyncio.timeout(seconds):
            while True:
                if await admin.fetchval(query, *args):
                    return
                await asyncio.sleep(0.02)
    finally:
        await admin.close()


@pytest.fixture
async def scratch(pg_url: str, tag: str, cleanup: None) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh, empty database (dropped by ``cleanup``)."""
    name = f"scratch_{tag}"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:
        yield conn
    finally:
        await conn.close()


# -- CreateRequest -----------------------------------------------------------------------------------------------


def test_fingerprint_is_the_request_identity() -> None:
    a = CreateRequest("acme", "Acme", {"x": "1", "y": "2"})
    assert a.fingerprint() == CreateRequest("acme", "Acme", {"y": "2", "x": "1"}).fingerprint()
    assert CreateRequest("acme").fingerprint() == CreateRequest("acme", "acme").fingerprint()
    assert a.fingerprint() != CreateRequest("acme", "Acme", {"x": "1"}).fingerprint()
    assert a.fingerprint() != CreateRequest("acme", "Acme ", {"x": "1", "y": "2"}).fingerprint()


# -- the runner on a bare connection ---------------------------------------------------------------------------------


async def test_runner_commits_batches_and_records_history_and_seeds(
    scratch: asyncpg.Connection, tmp_path: Path
) -> None:
    d = write_set(
        tmp_path / "m",
        {
            "0000_a.sql": 'CREATE TABLE "a" ("id" integer, "who" text);\n',
            "0001_b.sql": "-- tenants:no-transaction\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n",
            "0002_c.sql": 'ALTER TABLE "a" ADD COLUMN "c" text;\n',
        },
    )
    write_set(d / "seeds", {"0001_s.sql": "INSERT INTO a (id, who) VALUES (1, current_setting('tenant.name'));\n"})
    ms = load(d)
    values = runner.SeedValues("t1", "Name 'quoted'", {})
    committed = await runner.apply(scratch, plan(ms.migrations, seed=True), seeds=ms.seeds, values=values)
    assert [m.version for m in committed] == [0, 1, 2]
    rows = await history.read(scratch)
    assert [(r.version, r.name, r.file, r.sha256, r.how) for r in rows] == [
        (m.version, m.name, m.file, m.sha256, "applied") for m in ms.migrations
    ]
    assert all(r.duration_ms >= 0 for r in rows)
    assert await scratch.fetchval("SELECT who FROM a WHERE id = 1") == "Name 'quoted'"
    assert await scratch.fetchval("SELECT count(*) FROM _tenants.seeds") == 1
    # Settings given to the seed were local to its transaction.
    assert await scratch.fetchval("SELECT current_setting('tenant.name', true)") in (None, "")


async def test_history_read_of_a_database_without_history(scratch: asyncpg.Connection) -> None:
    assert await history.read(scratch) == []


async def test_runner_keeps_earlier_batches_when_a_later_one_fails(scratch: asyncpg.Connection, tmp_path: Path) -> None:
    d = write_set(
        tmp_path / "m",
        {
            "0000_a.sql": "CREATE TYPE plan AS ENUM ('free');\n",
            "0001_b.sql": "ALTER TYPE plan ADD VALUE 'pro';\n",
            "0002_c.sql": "CREATE TABLE c (p plan DEFAULT 'pro');\n--> statement-breakpoint\nSELECT 1/0;\n",
        },
    )
    ms = load(d)
    with pytest.raises(MigrationFailed) as info:
        await runner.apply(scratch, plan(ms.migrations))
    assert info.value.details["version"] == 2
    assert info.value.details["statement"] == 2
    assert info.value.details["line"] == 3
    assert info.value.details["sqlstate"] == "22012"
    assert [r.version for r in await history.read(scratch)] == [0, 1]
    assert await scratch.fetchval("SELECT to_regclass('c') IS NULL")
    # The connection is usable afterwards: the failed transaction was rolled back.
    assert await scratch.fetchval("SELECT 1") == 1


async def test_failure_at_commit_is_a_migration_failure(scratch: asyncpg.Connection, tmp_path: Path) -> None:
    # A deferred foreign key is checked at COMMIT, after every statement of the batch succeeded.
    d = write_set(
        tmp_path / "m",
        {
            "0000_a.sql": "CREATE TABLE p (id int PRIMARY KEY);\n",
            "0001_b.sql": "CREATE TABLE c (p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);\n"
            "--> statement-breakpoint\nINSERT INTO c VALUES (5);\n",
        },
    )
    with pytest.raises(MigrationFailed) as info:
        await runner.apply(scratch, plan(load(d).migrations))
    details = info.value.details
    assert (details["version"], details["file"], details["sqlstate"]) == (1, "0001_b.sql", "23503")
    assert details["statement"] is None
    assert await history.read(scratch) == []  # the whole batch rolled back, history rows included
    assert await scratch.fetchval("SELECT to_regclass('p') IS NULL")


async def test_runner_locates_failures_in_no_transaction_files(scratch: asyncpg.Connection, tmp_path: Path) -> None:
    d = write_set(
        tmp_path / "m",
        {
            "0000_a.sql": "CREATE TABLE a (id int);\n",
            "0001_b.sql": (
                "-- tenants:no-transaction\n"  # 1
                "CREATE INDEX CONCURRENTLY a_1 ON a (id);\n"  # 2
                "--> statement-breakpoint\n"  # 3
                "CREATE INDEX CONCURRENTLY a_2\n"  # 4
                "  ON nowhere (id);\n"  # 5
            ),
        },
    )
    ms = load(d)
    with pytest.raises(MigrationFailed) as info:
        await runner.apply(scratch, plan(ms.migrations))
    details = info.value.details
    assert (details["version"], details["statement"], details["line"], details["sqlstate"]) == (1, 2, 4, "42P01")
    assert [r.version for r in await history.read(scratch)] == [0]
    # Outside a transaction, what ran before the failing statement stays.
    assert await scratch.fetchval("SELECT to_regclass('a_1') IS NOT NULL")


async def test_runner_failure_in_first_line_of_multi_statement_chunk(
    scratch: asyncpg.Connection, tmp_path: Path
) -> None:
    # A file without breakpoints (every golang-migrate or Flyway file) is split by PostgreSQL's parser: the failing
    # statement is named by its own number and line, whether the server gives a position (42P01) or not (23505).
    d = write_set(
        tmp_path / "m",
        {"0000_a.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n\n  INSERT INTO b VALUES (1);\n"},
    )
    with pytest.raises(MigrationFailed) as info:
        await runner.apply(scratch, plan(load(d).migrations))
    assert (info.value.details["statement"], info.value.details["line"]) == (3, 4)
    d = write_set(
        tmp_path / "n",
        {
            "0000_a.sql": "CREATE TABLE a (id int UNIQUE);\nINSERT INTO a VALUES (1);\n"
            "/* a comment; with a semicolon */\nINSERT INTO a VALUES (2);\nINSERT INTO a\n  VALUES (1);\n"
        },
    )
    with pytest.raises(MigrationFailed) as info:
        await runner.apply(scratch, plan(load(d).migrations))
    details = info.value.details
    assert (details["statement"], details["line"], details["sqlstate"]) == (4, 5, "23505")
    # the second file of a transaction: its statement is found by running the first again, then rolling back
    d = write_set(
        tmp_path / "o",
        {
            "0000_a.sql": "CREATE TABLE b (id int UNIQUE);\nINSERT INTO b VALUES (1);\n",
            "0001_b.sql": "INSERT INTO b VALUES (2);\nINSERT INTO b VALUES (1);\n",
        },
    )
    with pytest.raises(MigrationFailed) as info:
        await runner.apply(scratch, plan(load(d).migrations))
    details = info.value.details
    assert (details["file"], details["statement"], details["line"], details["sqlstate"]) == (
        "0001_b.sql",
        2,
        2,
        "23505",
    )
    assert await scratch.fetchval("SELECT to_regclass('b')") is None


# -- provisioner -----------------------------------------------------------------------------------------------------


async def test_create_replay_and_conflict(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok")
    async with provisioner_for(settings) as p:
        tenant, created, _ = await p.create(CreateRequest("acme", "Acme", {"email": "a@acme.test"}))
        assert created
        assert (tenant.state, tenant.version, tenant.database_owned) == ("ready", 1, True)
        again, created, _ = await p.create(CreateRequest("acme", "Acme", {"email": "a@acme.test"}))
        assert not created
        assert again.created_at == tenant.created_at
        with pytest.raises(TenantExists):
            await p.create(CreateRequest("acme", "Other"))
        status = await p.schema("acme")
        assert status.status == "up_to_date"
        assert [a.version for a in status.applied] == [0, 1]
    assert await databases(pg_url, settings.db_prefix) == {f"{settings.db_prefix}acme"}


async def test_statement_timeout_fails_the_migration(make_settings: MakeSettings, tmp_path: Path, pg_url: str) -> None:
    d = write_set(
        tmp_path / "m", {"0000_a.sql": "CREATE TABLE a (id int);\n--> statement-breakpoint\nSELECT pg_sleep(5);\n"}
    )
    settings = make_settings(d, statement_timeout=0.2)
    async with provisioner_for(settings) as p:
        with pytest.raises(MigrationFailed) as info:
            await p.create(CreateRequest("slow"))
        assert info.value.details["sqlstate"] == "57014"
        assert info.value.details["statement"] == 2
        tenant = await p.get("slow")
        assert tenant.state == "failed"
        assert tenant.error is not None
        assert tenant.error["sqlstate"] == "57014"
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_connection_lost_mid_migration_is_database_unavailable(
    make_settings: MakeSettings, tmp_path: Path, pg_url: str
) -> None:
    d = write_set(
        tmp_path / "m", {"0000_a.sql": "CREATE TABLE a (id int);\n--> statement-breakpoint\nSELECT pg_sleep(30);\n"}
    )
    settings = make_settings(d)
    database = f"{settings.db_prefix}lost"
    async with provisioner_for(settings) as p:
        task = asyncio.create_task(p.create(CreateRequest("lost")))
        await until(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%'",
            database,
        )
        with pytest.raises(DatabaseUnavailable):
            await task
        tenant = await p.get("lost")
        assert tenant.state == "failed"
        assert tenant.error is not None
        assert tenant.error["code"] == "database_unavailable"
        assert not tenant.database_owned
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_interrupted_queued_creation_is_undone_and_queued_again_by_recovery(
    make_settings: MakeSettings, tmp_path: Path, pg_url: str
) -> None:
    d = write_set(
        tmp_path / "m", {"0000_a.sql": "CREATE TABLE a (id int);\n--> statement-breakpoint\nSELECT pg_sleep(30);\n"}
    )
    settings = make_settings(d)
    database = f"{settings.db_prefix}bg"
    async with provisioner_for(settings) as p:
        tenant, created, _ = await p.create(CreateRequest("bg"), wait=False)
        assert created
        assert tenant.state == "queued"
        assert (await p.get("bg")).queue_position == 1
        p.spawn(queue.work(p))  # one worker (not the recovery loop: this test runs recovery itself)
        await until(
            pg_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%'", database
        )
        await p.close()  # shutdown cancels the background work mid-migration
        left = await p.get("bg")
        assert (left.state, left.database_owned) == ("provisioning", True)
        assert database in await databases(pg_url, settings.db_prefix)

        # The next start (here: another provisioner on the same catalog) undoes it.
        successor = Provisioner(p.server, p.migrations, settings)
        assert await successor.recover() == 1
        tenant = await successor.get("bg")  # its client holds a 202: started again, from scratch
        assert (tenant.state, tenant.queue_position) == ("queued", 1)
        assert not tenant.database_owned
        assert not tenant.role_owned
        assert await successor.recover() == 0
        await successor.close()  # its own admin pool on the tenant server
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_recovery_drops_the_database_of_a_failed_tenant_still_owning_one(
    make_settings: MakeSettings, pg_url: str
) -> None:
    settings = make_settings(FIXTURES / "ok")
    async with provisioner_for(settings) as p:
        await p.create(CreateRequest("half"))
        # A process that died between marking the tenant failed and dropping its database.
        async with p.server.catalog() as conn:
            await catalog.mark(conn, "half", "failed", error={"code": "migration_failed", "message": "x"})
        assert await p.recover() == 1
        tenant = await p.get("half")
        assert tenant.state == "failed"
        assert not tenant.database_owned
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_recovery_leaves_a_tenant_that_finished_since_it_was_listed(
    make_settings: MakeSettings, pg_url: str
) -> None:
    """The recovery loop lists unfinished tenants, then takes each one's lock: one whose own operation finished in
    between is read again under the lock and left alone (never its database dropped)."""
    settings = make_settings(FIXTURES / "ok")
    async with provisioner_for(settings) as p:
        await p.create(CreateRequest("done"))
        listed = replace(await p.get("done"), state="provisioning")  # as the listing saw it a moment before
        assert await recover._try(p, listed) is False
        assert (await p.get("done")).state == "ready"
    assert await databases(pg_url, settings.db_prefix) == {f"{settings.db_prefix}done"}


async def test_recovery_skips_tenants_held_by_a_live_process(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok")
    async with provisioner_for(settings) as p:
        async with p.server.catalog() as conn:
            await catalog.insert(conn, "busy", "busy", f"{settings.db_prefix}busy", "x")
        other = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
        try:
            await other.execute("SELECT pg_advisory_lock($1, hashtext($2))", 0x7E4A1, "busy")
            assert await p.recover() == 0
            assert (await p.get("busy")).state == "provisioning"
        finally:
            await other.close()
        assert await p.recover() == 1
        assert (await p.get("busy")).state == "failed"


# -- per-tenant locks ------------------------------------------------------------------------------------------------


async def test_locks_serialise_one_tenant_and_bound_the_wait(make_settings: MakeSettings) -> None:
    settings = make_settings(FIXTURES / "ok", busy_timeout=0.3)
    async with provisioner_for(settings) as p:
        lease = await p.locks.acquire("acme")
        try:
            with pytest.raises(TenantBusy):
                await p.locks.acquire("acme")
            assert await p.locks.try_acquire("acme") is None
            other = await p.locks.acquire("other")  # another tenant is not blocked
            await other.release()
        finally:
            await lease.release()
        await lease.release()  # idempotent
        again = await p.locks.acquire("acme")
        await again.release()
        assert p.locks._local == {}


async def test_lock_waiters_run_in_turn(make_settings: MakeSettings) -> None:
    settings = make_settings(FIXTURES / "ok")
    async with provisioner_for(settings) as p:
        inside = 0
        most = 0

        async def work() -> None:
            nonlocal inside, most
            lease = await p.locks.acquire("acme")
            try:
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1
            finally:
                await lease.release()

        await asyncio.gather(*(work() for _ in range(30)))
        assert most == 1
        assert p.locks._local == {}


async def test_locks_exclude_another_process(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok", busy_timeout=0.3)
    async with provisioner_for(settings) as p:
        lease = await p.locks.acquire("acme")
        other = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
        try:
            got: Any = await other.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", 0x7E4A1, "acme")
            assert got is False
            await lease.release()
            got = await other.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", 0x7E4A1, "acme")
            assert got is True
        finally:
            await other.close()


# -- catalog ---------------------------------------------------------------------------------------------------------


async def test_catalog_upgrade_is_idempotent_and_safe_concurrently(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok")
    servers = [Server(pg_url, settings.catalog_database, 2) for _ in range(2)]
    await asyncio.gather(*(s.open() for s in servers))  # both find the catalog database missing
    try:
        conns = [await asyncpg.connect(with_database(pg_url, settings.catalog_database)) for _ in range(3)]
        try:
            versions = await asyncio.gather(*(catalog.upgrade(c) for c in conns))
            assert len(set(versions)) == 1
            assert await catalog.upgrade(conns[0]) == versions[0]
            rows = await conns[0].fetch("SELECT version FROM catalog_versions ORDER BY version")
            assert [r["version"] for r in rows] == list(range(1, versions[0] + 1))
        finally:
            for c in conns:
                await c.close()
    finally:
        for s in servers:
            await s.close()
