"""PostgreSQL restarts and stops while the service runs: /readyz reports the outage, operations cut short answer 503,
the recovery loop leaves no tenant in flight, and the service serves again once the server is back, without a
restart of its own. Each test starts its own cluster: CI's second pass points the suite at a shared server."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr

from service.config import Settings
from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres
from tests.conftest import FIXTURES, running
from tests.process import free_port


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tenants-outage-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))  # noqa: S108


async def test_service_survives_a_postgres_restart(make_settings: Callable[..., Settings]) -> None:
    data = scratch_dir()
    port = free_port()
    pg = EmbeddedPostgres(data, port=port, durable=False)
    try:
        url = await asyncio.to_thread(pg.start)
        settings = make_settings(FIXTURES / "ok", database_url=SecretStr(url))
        async with running(settings) as client:
            assert (await client.post("/tenants", json={"id": "before"})).status_code == 201
            await asyncio.to_thread(pg.stop)
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["code"] == "database_unavailable"
            listing = await client.get("/tenants")
            assert listing.status_code == 503
            assert listing.headers["content-type"] == "application/problem+json"
            await asyncio.to_thread(pg.start)
            for _ in range(50):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/tenants/before")).json()["state"] == "ready"
            assert (await client.post("/tenants", json={"id": "after"})).status_code == 201
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


# -- outages in the middle of operations ---------------------------------------------------------------------------

TRANSITIONAL = ("queued", "provisioning", "deleting", "restoring", "moving")
# What any request of these scenarios may answer: success, or 503 database_unavailable; never a 500.
SUCCESS = {200, 201, 202, 204}
SLOW_FILE = "SELECT pg_sleep(0.4);\nCREATE TABLE slow_done (id integer);\n"


def with_slow_file(root: Path) -> Path:
    """The ok set plus a file that sleeps: operations are still running when the server goes away."""
    target = root / "migrations"
    shutil.copytree(FIXTURES / "ok", target)
    return target


async def answers(client: httpx.AsyncClient, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    return await asyncio.gather(*(client.request(method, path, **kw) for method, path, kw in calls))


def only_503s(responses: list[httpx.Response]) -> list[int]:
    for r in responses:
        assert r.status_code in SUCCESS or (r.status_code, r.json()["code"]) == (503, "database_unavailable"), (
            r.request.method,
            r.request.url.path,
            r.status_code,
            r.text,
        )
    return [r.status_code for r in responses]


async def settle_both(requests: Awaitable[Any], fault: Awaitable[Any]) -> tuple[Any, Any]:
    """Both to their end even when one fails: a fault left running could start the cluster after the teardown."""
    done = await asyncio.gather(requests, fault, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    return done[0], done[1]


def acknowledged(responses: list[httpx.Response]) -> set[str]:
    return {r.json()["id"] for r in responses if r.request.method == "POST" and r.status_code in (201, 202)}


async def settled(catalog_url: str, rollout_ids: list[int], deadline: float) -> dict[str, tuple[str, bool, bool]]:
    """Poll the catalog until no tenant is in a transitional state and no rollout runs; the tenants' states."""
    while True:
        conn = await asyncpg.connect(catalog_url)
        try:
            rows = await conn.fetch("SELECT id, state, database_owned, role_owned FROM tenants")
            running = await conn.fetchval(
                "SELECT count(*) FROM rollouts WHERE id = ANY($1::int[]) AND state = 'running'", rollout_ids
            )
        finally:
            await conn.close()
        states = {r["id"]: (r["state"], r["database_owned"], r["role_owned"]) for r in rows}
        if not running and not [t for t, (s, _, _) in states.items() if s in TRANSITIONAL]:
            return states
        assert time.monotonic() < deadline, (states, running)
        await asyncio.sleep(0.25)


async def leftovers(
    admin_url: str, prefix: str, states: dict[str, tuple[str, bool, bool]]
) -> tuple[set[str], set[str]]:
    """Databases and roles with the tenants' prefix that no ready (or deleted, kept) tenant owns: a half-made
    tenant, an orphan."""
    ready = {prefix + t for t, (state, _, _) in states.items() if state in ("ready", "deleted")}
    conn = await asyncpg.connect(admin_url)
    try:
        dbs = {
            r["datname"]
            for r in await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
        }
        roles = {
            r["rolname"]
            for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix)
        }
    finally:
        await conn.close()
    return dbs - ready, roles - ready


async def test_outages_mid_operation_answer_503_and_strand_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A private cluster (never the suite's shared server) restarted, then stopped for seconds, while sync creates,
    async creates, migrates, a rollout and deletes run: only 503s, and 30 s after the server is back no tenant is
    left queued, provisioning or deleting, nothing half-made is left, and the service was never restarted."""
    data, port = scratch_dir(), free_port()
    pg = EmbeddedPostgres(data, port=port, durable=False)
    try:
        url = await asyncio.to_thread(pg.start)
        migrations = with_slow_file(tmp_path)
        settings = make_settings(
            migrations,
            database_url=SecretStr(url),
            recovery_interval=0.5,
            queue_poll_interval=0.2,
            rollout_poll_interval=0.5,
            busy_timeout=20.0,
        )
        async with running(settings) as client:  # tenants to migrate and roll out, at version 1
            for tid in ["m1", "m2", "r1", "r2", "r3"]:
                assert (await client.post("/tenants", json={"id": tid})).status_code == 201
        (migrations / "0002_slow.sql").write_text(SLOW_FILE)
        catalog_url = with_database(url, settings.catalog_database)
        async with running(settings) as client:
            rollout = await client.post(
                "/rollouts", json={"tenants": ["r1", "r2", "r3"], "canary": 1, "concurrency": 2}
            )
            assert rollout.status_code == 202, rollout.text
            async_ = {"headers": {"Prefer": "respond-async"}}
            calls = [("POST", "/tenants", {"json": {"id": f"s{i}"}}) for i in range(4)]
            calls += [("POST", "/tenants", {"json": {"id": f"a{i}"}, **async_}) for i in range(4)]
            calls += [("POST", f"/tenants/{t}/migrate", {}) for t in ["m1", "m2"]]
            calls += [("GET", "/tenants/r1/schema", {})]

            async def restart() -> None:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(pg.stop)
                await asyncio.to_thread(pg.start)

            first = await settle_both(answers(client, calls), restart())
            back = time.monotonic()
            statuses = only_503s(first[0])
            states = await settled(catalog_url, [rollout.json()["id"]], back + 30)
            # A tenant acknowledged (201, 202) is ready: a queued creation cut short is started again.
            assert {t: states[t][0] for t in acknowledged(first[0])} == dict.fromkeys(acknowledged(first[0]), "ready")
            assert (await client.post("/tenants/m1/migrate")).json()["current_version"] == 2
            assert (await client.get(f"/rollouts/{rollout.json()['id']}")).json()["state"] == "succeeded"
            assert await leftovers(url, settings.db_prefix, states) == (set(), set())

            # Stopped for seconds while creates and deletes run; requests meanwhile answer 503 at once.
            ready = [t for t, (s, _, _) in states.items() if s == "ready" and t.startswith("s")]
            calls = [("POST", "/tenants", {"json": {"id": f"t{i}"}}) for i in range(3)]
            calls += [("POST", "/tenants", {"json": {"id": f"b{i}"}, **async_}) for i in range(3)]
            calls += [("DELETE", f"/tenants/{t}", {"params": {"confirm": t}}) for t in ready]

            async def stop_for_a_while() -> list[httpx.Response]:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(pg.stop)
                during = await answers(client, [("GET", "/tenants", {}), ("POST", "/tenants", {"json": {"id": "x"}})])
                await asyncio.sleep(2)
                await asyncio.to_thread(pg.start)
                return during

            second, during = await settle_both(answers(client, calls), stop_for_a_while())
            back = time.monotonic()
            assert [r.status_code for r in during] == [503, 503]
            statuses += only_503s(second) + only_503s(during)
            states = await settled(catalog_url, [], back + 30)
            assert {t: states[t][0] for t in acknowledged(second)} == dict.fromkeys(acknowledged(second), "ready")
            assert await leftovers(url, settings.db_prefix, states) == (set(), set())
            assert (await client.post("/tenants", json={"id": "after"})).status_code == 201
            assert 503 in statuses, statuses  # the outages did cut operations short
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)
