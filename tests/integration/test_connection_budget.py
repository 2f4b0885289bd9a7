"""Connections are a budget: 500 tenants listed by live status against a server of ``max_connections=40``.

The test starts its own cluster with that limit (whatever server the suite uses), makes one tenant through the
service and 499 more as copies of its database with catalog rows beside them (the service would take minutes to
replay 500), then lists them all by status while a watcher samples the server's backends and a superuser connects.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from service.config import Settings
from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres
from tests.conftest import running
from tests.drift_support import app_running, provisioner_of

MakeSettings = Callable[..., Settings]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
TENANTS = 500


@pytest.fixture(scope="module")
def small_server() -> Iterator[str]:
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 - mkdtemp makes a private dir
    data = Path(tempfile.mkdtemp(prefix="tenants-budget-", dir=base))
    server = EmbeddedPostgres(data, durable=False, max_connections=40)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def budget_settings(small_server: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return Settings(
        database_url=SecretStr(small_server),
        migrations_dir=FIXTURES / "ok",
        catalog_database=f"cat_{tag}",
        db_prefix=f"b{tag}_",
        tenant_connection_idle=1.0,
    )


async def copy_tenants(url: str, settings: Settings, source: str, n: int) -> None:
    """``n`` copies of the tenant ``source`` (its database and catalog row), four at a time."""
    prefix = settings.db_prefix
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        async with gate:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'CREATE DATABASE "{prefix}c{i}" TEMPLATE "{prefix}{source}" STRATEGY FILE_COPY')
            finally:
                await conn.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    conn = await asyncpg.connect(with_database(url, settings.catalog_database))
    try:
        await conn.execute(
            """INSERT INTO tenants (id, name, database, state, request_sha256, database_owned, version, server)
               SELECT 'c' || g, 'c' || g, $2 || 'c' || g, state, request_sha256, database_owned, version, server
               FROM tenants, generate_series(0, $3 - 1) g WHERE id = $1""",
            source,
            prefix,
            n,
        )
    finally:
        await conn.close()


async def backends(url: str, prefix: str) -> tuple[int, int]:
    """(client backends on the server, of which connected to a tenant database), seen by a new superuser session."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS total, count(*) FILTER (WHERE starts_with(datname, $1)) AS tenants
               FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()""",
            prefix,
        )
        assert row is not None
        return int(row["total"]), int(row["tenants"])
    finally:
        await conn.close()


async def test_500_tenants_by_status_on_40_connections(
    small_server: str, budget_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(budget_settings) as client:
        assert (await client.post("/tenants", json={"id": "seed"})).status_code == 201
    await copy_tenants(small_server, budget_settings, "seed", TENANTS - 1)

    async with running(budget_settings) as client:
        stop = asyncio.Event()
        seen: list[int] = []

        async def watch() -> None:
            while not stop.is_set():
                seen.append((await backends(small_server, budget_settings.db_prefix))[0])
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            # Two dashboards at once, each listing every tenant by live status.
            pages = await asyncio.gather(
                *(client.get("/tenants", params={"status": "up_to_date", "limit": TENANTS}) for _ in range(2))
            )
        finally:
            stop.set()
            await watcher
        # No error anywhere: not in the answers, not in the service's log.
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        for page in pages:
            assert page.status_code == 200, page.text
            assert len(page.json()["items"]) == TENANTS
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        (budget,) = ready.json()["connections"]
        # 40 - 3 reserved for superusers, half of it: 18; the catalog pool shrinks from its default 10 to 5 (the
        # service's defaults fit a small server), the admin pool holds 5: 8 for the rest.
        assert budget["max_connections"] == 40
        assert budget["ceiling"] == 18
        assert budget["reserved"] == 10
        assert budget["refused"] == 0
        # The service's own backends never passed its ceiling (the watcher's session is not among them).
        assert seen
        assert max(seen) <= budget["ceiling"], max(seen)

        # Idle kept connections close after TENANTS_TENANT_CONNECTION_IDLE (1 s here).
        assert (await backends(small_server, budget_settings.db_prefix))[1] > 0
        for _ in range(40):
            await asyncio.sleep(0.1)
            if (await backends(small_server, budget_settings.db_prefix))[1] == 0:
                break
        assert (await backends(small_server, budget_settings.db_prefix))[1] == 0


async def test_a_spent_budget_waits_then_answers_503_and_readyz_says_so(make_settings: MakeSettings) -> None:
    # Pools of 3 (catalog) and 3 (admin, max_parallel + 1), and 4 for everything else.
    settings = make_settings(
        FIXTURES / "ok", pool_size=3, max_parallel=2, connection_ceiling=10, connection_wait=0.5, tenant_connections=0
    )
    async with app_running(settings) as (app, client):
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
        budget = provisioner_of(app).server.budget
        url = settings.database_url.get_secret_value()  # type: ignore[union-attr]
        held = [await budget.connect(url) for _ in range(4)]
        try:
            waiting = asyncio.create_task(client.get("/tenants/acme/schema"))
            await asyncio.sleep(0.2)
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["reason"] == "connection_budget"
            r = await waiting
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "database_unavailable"
            assert r.json()["reason"] == "connection_budget"
            assert "connection budget of server default spent: 10 of 10" in r.json()["detail"]
        finally:
            for conn in held:
                await conn.close()
        assert (await client.get("/tenants/acme/schema")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        (pressure,) = ready.json()["connections"]
        assert (pressure["ceiling"], pressure["reserved"], pressure["refused"]) == (10, 6, 1)
