"""Rollouts outlive the process that drives them: the real service is killed (SIGKILL) mid-rollout and restarted,
and two replicas share one catalog; every tenant ends at the target, migrated exactly once.

Tenants are made in-process on 0000-0001; the services then start with files added. A migration that sleeps keeps
a rollout busy long enough to kill its driver while tenants are being migrated. Each replica connects with its own
``application_name`` so the test can see, in ``pg_locks``, which one holds a rollout's advisory lock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.store.db import with_database
from tests.conftest import running
from tests.process import ServiceProcess

MigrationDir = Callable[[str], Path]
ADD_PLAN = 'ALTER TABLE "accounts" ADD COLUMN "plan" text;\n'
ADD_TIER = 'ALTER TABLE "accounts" ADD COLUMN "tier" text;\n'
# First key of a rollout's advisory lock (service.rollout).
ROLLOUT_LOCK = 0x7E4A2


def sleepy(seconds: float, then: str) -> str:
    return f"SELECT pg_sleep({seconds});\n--> statement-breakpoint\n{then}"


@pytest.fixture
def env(pg_url: str, tag: str, cleanup: None) -> Callable[..., dict[str, str]]:
    def make(migrations: Path, name: str) -> dict[str, str]:
        return {
            "TENANTS_DATABASE_URL": f"{pg_url}{'&' if '?' in pg_url else '?'}application_name={name}",
            "TENANTS_CATALOG_DATABASE": f"cat_{tag}",
            "TENANTS_DB_PREFIX": f"t{tag}_",
            "TENANTS_MIGRATIONS_DIR": str(migrations),
            "TENANTS_ROLLOUT_POLL_INTERVAL": "0.2",
            "TENANTS_LOG_LEVEL": "warning",
        }

    return make


async def make_fleet(settings: Settings, ids: list[str]) -> None:
    async with running(settings) as client:
        answers = await asyncio.gather(*(client.post("/tenants", json={"id": i}) for i in ids))
        assert {a.status_code for a in answers} == {201}


async def poll(url: str, rollout_id: int, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client, asyncio.timeout(30):
        while True:
            body: dict[str, Any] = (await client.get(f"/rollouts/{rollout_id}")).json()
            if until(body):
                return body
            await asyncio.sleep(0.02)


def ended(body: dict[str, Any]) -> bool:
    return body["state"] != "running"


def midway(body: dict[str, Any]) -> bool:
    """Some tenants done, some being migrated: a kill now interrupts a migration."""
    return body["done"] >= 2 and body["running"] >= 1


@pytest.fixture
def catalog(pg_url: str, tag: str) -> Callable[..., Awaitable[list[asyncpg.Record]]]:
    """Queries on the test's catalog database (made by the first service to start)."""

    async def fetch(sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(with_database(pg_url, f"cat_{tag}"))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return fetch


Catalog = Callable[..., Awaitable[list[asyncpg.Record]]]


async def driver(catalog: Catalog, rollout_id: int) -> str:
    """The application_name of the replica holding the rollout's lock (taken just after the rollout is recorded)."""
    async with asyncio.timeout(10):
        while True:
            rows = await catalog(
                """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2
                     AND l.granted""",
                ROLLOUT_LOCK,
                rollout_id,
            )
            if rows:
                name: str = rows[0]["application_name"]
                return name
            await asyncio.sleep(0.02)


async def post(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.post("/rollouts", json=body)


async def assert_migrated_once(
    pg_url: str, tag: str, catalog: Catalog, ids: list[str], top: int, *, killed: bool = False
) -> None:
    """Every tenant's history holds each version once, and one migrate operation per tenant succeeded.

    After a kill, a tenant whose migration committed just before it may have no operation recorded at all (a
    rollout records a tenant's operation with its outcome, after the tenant's commit) or, if it was a canary, one
    still ``running``; the retry has nothing left to apply, so records none. Its history above is the proof.
    """
    for tenant in ids:
        conn = await asyncpg.connect(with_database(pg_url, f"t{tag}_{tenant}"))
        try:
            rows = await conn.fetch("SELECT version FROM _tenants.history ORDER BY version")
        finally:
            await conn.close()
        assert [r["version"] for r in rows] == list(range(top + 1)), tenant
    rows = await catalog("SELECT tenant_id, state FROM operations WHERE kind = 'migrate'")
    succeeded = Counter(r["tenant_id"] for r in rows if r["state"] == "succeeded")
    if not killed:
        assert succeeded == dict.fromkeys(ids, 1)
        return
    assert max(succeeded.values()) == 1
    unfinished = Counter(r["tenant_id"] for r in rows if r["state"] == "running")
    assert all(succeeded[t] <= 1 and unfinished[t] <= 1 for t in ids)


async def test_rollout_resumes_after_a_restart(
    make_settings: Callable[..., Settings],
    migration_dir: MigrationDir,
    env: Callable[..., dict[str, str]],
    catalog: Catalog,
    pg_url: str,
    tag: str,
    tmp_path: Path,
) -> None:
    migrations = migration_dir("ok")
    fleet = [f"r{i}" for i in range(8)]
    await make_fleet(make_settings(migrations), fleet)
    (migrations / "0002_slow.sql").write_text(sleepy(0.3, ADD_PLAN))

    dying = ServiceProcess(env(migrations, "first"), tmp_path / "log").start()
    try:
        r = await post(dying.url, {"canary": 1, "concurrency": 2})
        assert r.status_code == 202, r.text
        rollout_id = r.json()["id"]
        await poll(dying.url, rollout_id, midway)
    finally:
        dying.kill()
    service = ServiceProcess(env(migrations, "second"), tmp_path / "log").start()
    try:
        final = await poll(service.url, rollout_id, ended)
    finally:
        service.stop()
    assert final["state"] == "succeeded", final
    assert (final["done"], final["failed"], final["skipped"]) == (8, 0, 0)
    retried = [t["id"] for t in final["tenants"] if t["attempts"] == 2]
    assert retried, "the tenants being migrated at the kill are run again"
    assert all(t["from_version"] == 1 for t in final["tenants"])
    await assert_migrated_once(pg_url, tag, catalog, fleet, 2, killed=True)


async def test_two_replicas_one_driver_and_takeover(
    make_settings: Callable[..., Settings],
    migration_dir: MigrationDir,
    env: Callable[..., dict[str, str]],
    catalog: Catalog,
    pg_url: str,
    tag: str,
    tmp_path: Path,
) -> None:
    migrations = migration_dir("ok")
    fleet = [f"m{i}" for i in range(10)]
    await make_fleet(make_settings(migrations), fleet)
    (migrations / "0002_plan.sql").write_text(sleepy(0.05, ADD_PLAN))
    (migrations / "0003_tier.sql").write_text(sleepy(0.3, ADD_TIER))
    replicas = {
        name: ServiceProcess(env(migrations, name), tmp_path / f"{name}.log").start() for name in ("alpha", "beta")
    }
    try:
        # Both alive: one drives, the other only looks; nobody migrates a tenant twice.
        alpha, beta = replicas["alpha"], replicas["beta"]
        first = (await post(alpha.url, {"to_version": 2, "canary": 2, "concurrency": 4})).json()
        busy = await post(beta.url, {})
        assert (busy.status_code, busy.json()["code"]) == (409, "rollout_in_progress")
        assert await driver(catalog, first["id"]) in replicas
        done = await poll(beta.url, first["id"], ended)
        assert done["state"] == "succeeded", done
        assert all(t["attempts"] == 1 for t in done["tenants"])
        assert all(p.proc is not None and p.proc.poll() is None for p in replicas.values())
        await assert_migrated_once(pg_url, tag, catalog, fleet, 2)

        # Its driver dies: the other replica takes the rollout over within its poll interval.
        second = (await post(beta.url, {"canary": 0, "concurrency": 2})).json()
        await poll(beta.url, second["id"], midway)
        name = await driver(catalog, second["id"])
        assert name in replicas
        replicas[name].kill()
        survivor = next(p for n, p in replicas.items() if n != name)
        final = await poll(survivor.url, second["id"], ended)
        assert final["state"] == "succeeded", final
        assert any(t["attempts"] == 2 for t in final["tenants"])
    finally:
        for p in replicas.values():
            p.kill()
    for tenant in fleet:
        conn = await asyncpg.connect(with_database(pg_url, f"t{tag}_{tenant}"))
        try:
            levels = await conn.fetchval("SELECT array_agg(version ORDER BY version) FROM _tenants.history")
            assert levels == [0, 1, 2, 3]
        finally:
            await conn.close()
