"""Tenants on two real PostgreSQL servers: placement, and every operation going to the tenant's own server.

Server ``a`` is the session cluster (which also holds the catalog), ``b`` a second cluster started for this module.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from service.config import Settings
from service.errors import NoCapacity, ServerFull, UnknownServer
from service.history.migrations import load
from service.store import catalog
from service.store.db import Server
from service.tenants.adopt import Adopter, AdoptRequest
from service.tenants.create import CreateRequest
from service.tenants.provisioner import Provisioner
from tests.conftest import FIXTURES
from tests.servers_support import backends, execute, names_on, second_cluster, two_servers

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="module")
def url_b() -> Iterator[str]:
    with second_cluster() as (_, url):
        yield url


@asynccontextmanager
async def provisioner_for(settings: Settings) -> AsyncIterator[Provisioner]:
    """A provisioner whose tenant servers come from the settings (as the app builds it)."""
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


async def test_placement_spreads_by_load_and_respects_capacity(
    make_settings: MakeSettings, pg_url: str, url_b: str
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b, 2, 3))
    async with provisioner_for(settings) as p:
        placed = {}
        for tid in ("t1", "t2", "t3", "t4", "t5"):
            placed[tid] = (await p.create(CreateRequest(tid))).tenant.server
        # fewest tenants first, a on a tie; a is full after two
        assert placed == {"t1": "a", "t2": "b", "t3": "a", "t4": "b", "t5": "b"}
        with pytest.raises(NoCapacity):
            await p.create(CreateRequest("t6"))
        with pytest.raises(ServerFull):
            await p.create(CreateRequest("t7", server="b"))
        with pytest.raises(UnknownServer):
            await p.create(CreateRequest("t8", server="c"))
        assert (await p.create(CreateRequest("t1", server="a"))).created is False  # a replay naming its server
        async with p.server.catalog() as conn:
            assert await catalog.count_by_server(conn) == {"a": 2, "b": 3}

    prefix = settings.db_prefix
    on_a, on_b = await names_on(pg_url, prefix), await names_on(url_b, prefix)
    assert on_a == ({f"{prefix}t1", f"{prefix}t3"},) * 2  # each database and its role on its server only
    assert on_b == ({f"{prefix}t2", f"{prefix}t4", f"{prefix}t5"},) * 2


async def test_concurrent_creations_on_two_replicas_never_overfill_a_server(
    make_settings: MakeSettings, pg_url: str, url_b: str
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b, 1, 2))
    async with provisioner_for(settings) as one, provisioner_for(settings) as two:
        requests = [(one, two)[i % 2].create(CreateRequest(f"r{i}")) for i in range(6)]
        results = await asyncio.gather(*requests, return_exceptions=True)
        made = [r.tenant.server for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert sorted(made) == ["a", "b", "b"]
        assert len(refused) == 3
        assert all(isinstance(r, NoCapacity) for r in refused), refused


async def test_every_operation_goes_to_the_tenant_server(
    make_settings: MakeSettings, migration_dir: Callable[[str], Path], pg_url: str, url_b: str
) -> None:
    directory = migration_dir("ok")
    settings = make_settings(directory, servers=two_servers(pg_url, url_b))
    prefix = settings.db_prefix
    async with provisioner_for(settings) as p:
        made = await p.create(CreateRequest("far", server="b"))
        assert made.tenant.server == "b"
        assert made.connection_url is not None
        assert urlsplit(made.connection_url).port == urlsplit(url_b).port
        await p.create(CreateRequest("near", server="a"))
    shutil.copy(FIXTURES / "no_tx" / "0001_concurrent_index.sql", directory / "0002_concurrent_index.sql")

    async with provisioner_for(settings) as p:
        migrated = await p.migrate("far")
        assert (migrated.current_version, migrated.status) == (2, "up_to_date")
        assert (await p.schema("far")).current_version == 2
        assert (await p.drift.check("far")).clean
        await execute(url_b, f"{prefix}far", "DROP INDEX accounts_email_idx")
        drifted = await p.drift.check("far")
        assert [d.name for d in drifted.differences] == ["public.accounts_email_idx"]

        url = await p.rotate_credentials("far")
        assert urlsplit(url).port == urlsplit(url_b).port
        tenant_conn = await asyncpg.connect(url)  # the tenant's own role logs in to its database on b
        try:
            assert await tenant_conn.fetchval("SELECT current_database()") == f"{prefix}far"
        finally:
            await tenant_conn.close()

        await p.delete("far", confirm="far", purge=True)
        assert await names_on(url_b, prefix) == (set(), set())
        assert await names_on(pg_url, prefix) == ({f"{prefix}near"}, {f"{prefix}near"})


async def test_adoption_and_discovery_on_a_named_server(make_settings: MakeSettings, pg_url: str, url_b: str) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b))
    prefix = settings.db_prefix
    async with provisioner_for(settings) as p:
        await p.create(CreateRequest("src", server="b"))
        await p.delete("src", confirm="src", purge=True)  # nothing left on b ...
        await execute(url_b, "postgres", f'CREATE DATABASE "{prefix}legacy"')
        await execute(url_b, f"{prefix}legacy", 'CREATE TABLE "accounts" ("id" serial PRIMARY KEY, "email" text)')

        adopter = Adopter(p)
        on_b = {d.name: d for d in await adopter.discover("b")}
        assert on_b[f"{prefix}legacy"].kind == "unmanaged"
        assert on_b[f"{prefix}legacy"].server == "b"
        assert f"{prefix}legacy" not in {d.name for d in await adopter.discover("a")}

        status, adopted = await adopter.adopt(AdoptRequest("legacy", f"{prefix}legacy", baseline_version=0, server="b"))
        assert adopted
        assert (status.current_version, (await p.get("legacy")).server) == (0, "b")
        assert (await p.migrate("legacy")).current_version == 1


async def test_schema_reads_reuse_one_connection(make_settings: MakeSettings, pg_url: str, url_b: str) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b))
    database = f"{settings.db_prefix}cached"
    async with provisioner_for(settings) as p:
        await p.create(CreateRequest("cached", server="b"))
        assert await backends(url_b, database) == []
        await asyncio.gather(*(p.schema("cached") for _ in range(4)))
        for _ in range(20):
            assert (await p.schema("cached")).current_version == 1
        kept = await backends(url_b, database)
        assert 1 <= len(kept) <= 4  # at most one per concurrent reader, reused ever after
        for _ in range(5):
            await p.schema("cached")
        assert await backends(url_b, database) == kept

        # A kept connection ended server-side (a restart, an operator) is replaced, invisibly to the reader.
        await execute(url_b, "postgres", "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", kept)
        assert (await p.schema("cached")).current_version == 1
        assert (await p.drift.check("cached")).clean
        assert not set(await backends(url_b, database)) & set(kept)

        await p.delete("cached", confirm="cached", purge=True)  # with kept connections to the database
        assert await names_on(url_b, database) == (set(), set())
        assert len(p.connections) == 0


async def test_a_cache_of_zero_opens_a_connection_per_read(make_settings: MakeSettings, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok", tenant_connections=0)
    async with provisioner_for(settings) as p:
        await p.create(CreateRequest("fresh"))
        await p.schema("fresh")
        assert len(p.connections) == 0
        assert await backends(pg_url, f"{settings.db_prefix}fresh") == []
