"""A burst of concurrent creations, then of deletions: all succeed, in line behind ``TENANTS_MAX_PARALLEL`` running
jobs, without exhausting the catalog pool or the server's connections (the test servers allow 100 to 200)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg
import httpx

from service.config import Settings
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
# 200 on the suite's own cluster (about 15 s). An external server (TENANTS_TEST_DATABASE_URL; CI's second run) is
# durable: there every DROP DATABASE waits for a checkpoint, and 200 deletions alone take 60 to 90 s, so 50.
BURST = 50 if os.environ.get("TENANTS_TEST_DATABASE_URL") else 200
PARALLEL = 4


async def _watch_tenant_connections(pg_url: str, prefix: str, peak: list[int], stop: asyncio.Event) -> None:
    """Sample how many sessions are open on tenant databases while the burst runs.

    A job closes its tenant connection before its slot passes to the next one, but the server lists the closed
    session until its backend has exited, so one sample can briefly show ``PARALLEL + 1``. A count is therefore taken
    as the smaller of two consecutive samples (10 ms apart): an exiting backend is gone by the next one, while one job
    too many running at once would last a whole migration chain and show in both.
    """
    conn = await asyncpg.connect(pg_url)
    previous = 0
    try:
        while not stop.is_set():
            count = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE starts_with(datname, $1)", prefix)
            peak[0] = max(peak[0], min(count, previous))
            previous = count
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.01)
    finally:
        await conn.close()


async def _history_rows(pg_url: str, database: str) -> tuple[int, int]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM _tenants.history"),
            await conn.fetchval("SELECT count(*) FROM accounts"),
        )
    finally:
        await conn.close()


async def test_a_burst_of_distinct_creates_all_succeed(make_settings: MakeSettings, serve: Serve, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok", max_parallel=PARALLEL, busy_timeout=5.0)
    ids = [f"load_{n:03d}" for n in range(BURST)]
    peak = [0]
    stop = asyncio.Event()
    async with serve(settings) as client:
        watcher = asyncio.create_task(_watch_tenant_connections(pg_url, settings.db_prefix, peak, stop))
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.post("/tenants", json={"id": i}) for i in ids))
        elapsed = time.perf_counter() - started
        stop.set()
        await watcher
        refused = [r.text for r in answers if r.status_code != 201]
        assert refused == []
        assert all(r.json()["state"] == "ready" for r in answers)
        listed = (await client.get("/tenants", params={"limit": 500})).json()["items"]
        assert sorted(t["id"] for t in listed) == ids
        assert {t["state"] for t in listed} == {"ready"}
        await _check_every_tenant(pg_url, settings.db_prefix, ids)

        started = time.perf_counter()
        gone = await asyncio.gather(
            *(client.delete(f"/tenants/{i}", params={"confirm": i, "purge": "true"}) for i in ids)
        )
        dropped = time.perf_counter() - started
        assert {r.status_code for r in gone} == {204}
    # The burst waited in line (busy_timeout is far below its length) instead of failing as busy; at most
    # PARALLEL tenant databases were open at once.
    assert 0 < peak[0] <= PARALLEL, peak
    leftovers = await _fetch(
        pg_url,
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)"
        " UNION ALL SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
        settings.db_prefix,
    )
    assert leftovers == []
    print(f"{BURST} creates in {elapsed:.1f} s, {BURST} deletes in {dropped:.1f} s")  # shown with -s


async def _check_every_tenant(pg_url: str, prefix: str, ids: list[str]) -> None:
    gate = asyncio.Semaphore(16)

    async def rows(tenant_id: str) -> tuple[int, int]:
        async with gate:
            return await _history_rows(pg_url, prefix + tenant_id)

    found = await asyncio.gather(*(rows(i) for i in ids))
    assert set(found) == {(2, 1)}  # both migrations recorded, the seed ran


async def _fetch(pg_url: str, sql: str, *args: object) -> list[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        return [r[0] for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()
