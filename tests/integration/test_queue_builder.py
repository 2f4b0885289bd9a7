"""``tenantctl serve`` builds queued creations in a child process it supervises (``TENANTS_QUEUE_BUILDER=process``,
the default): a build never runs in the process that answers HTTP, a builder killed mid-build is restarted and the
queue drains (what it left half-made is queued again by the HTTP process's recovery loop), and no builder outlives
its service."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from service.store.db import with_database
from tests.integration.test_crash import env, sleepy_set, tenant_databases  # noqa: F401 - env is a fixture
from tests.process import ServiceProcess

ASYNC = {"Prefer": "respond-async"}


def builders_of(pid: int) -> list[int]:
    """The service's child processes running ``build-queue``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            if b"build-queue" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except FileNotFoundError:
            pass
    return found


async def until(check: Callable[[], object], what: str, seconds: float = 60) -> None:
    for _ in range(int(seconds * 10)):
        done = await check() if asyncio.iscoroutinefunction(check) else check()
        if done:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def states(client: httpx.AsyncClient, ids: list[str]) -> dict[str, str]:
    return {i: (await client.get(f"/tenants/{i}")).json()["state"] for i in ids}


async def builds(pg_url: str, tag: str, tenant_id: str) -> list[tuple[str, str | None, str | None]]:
    """The tenant's create operations: (state, error code, the worker's host/pid)."""
    conn = await asyncpg.connect(with_database(pg_url, f"cat_{tag}"))
    try:
        rows = await conn.fetch(
            """SELECT state, error->>'code' AS code, detail->>'worker' AS worker FROM operations
               WHERE tenant_id = $1 AND kind = 'create' ORDER BY id""",
            tenant_id,
        )
        return [(r["state"], r["code"], r["worker"]) for r in rows]
    finally:
        await conn.close()


async def test_builder_process_is_restarted_after_sigkill_and_the_queue_drains(
    env: Callable[..., dict[str, str]],  # noqa: F811 - the fixture
    pg_url: str,
    tag: str,
    tmp_path: Path,
) -> None:
    migrations = sleepy_set(tmp_path, 1.5)  # each build sleeps mid-chain: a kill there is mid-build
    service = ServiceProcess(env(migrations, TENANTS_RECOVERY_INTERVAL="0.5"), tmp_path / "log").start()
    assert service.proc is not None
    serve_pid = service.proc.pid
    ids = ["q1", "q2", "q3"]
    try:
        await until(lambda: len(builders_of(serve_pid)) == 1, "the builder process")
        [first] = builders_of(serve_pid)
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            for i in ids:
                assert (await client.post("/tenants", json={"id": i}, headers=ASYNC)).status_code == 202

            async def building() -> bool:
                return "provisioning" in (await states(client, ids)).values()

            await until(building, "a build in flight")
            # The HTTP process answers while a build runs, and the build is the child's, not the HTTP process's.
            assert (await client.get("/healthz")).status_code == 200
            building_now = [i for i, s in (await states(client, ids)).items() if s == "provisioning"]
            workers = {w for i in building_now for _, _, w in await builds(pg_url, tag, i)}
            assert {w.rsplit("/", 1)[1] for w in workers if w} == {str(first)}

            os.kill(first, signal.SIGKILL)
            await until(lambda: builders_of(serve_pid) not in ([], [first]), "a new builder process")
            [second] = builders_of(serve_pid)

            async def drained() -> bool:
                return set((await states(client, ids)).values()) == {"ready"}

            await until(drained, "every queued tenant ready")
        assert await tenant_databases(pg_url, tag) == sorted(f"t{tag}_{i}" for i in ids)
        # The tenants the killed builder was making were made again, by its successor.
        for tenant_id in building_now:
            attempts = await builds(pg_url, tag, tenant_id)
            assert attempts[-1][:2] == ("succeeded", None)
            assert (attempts[-1][2] or "").endswith(f"/{second}")
    finally:
        assert service.stop() == 0
    # Stopped with its service.
    await until(lambda: not Path(f"/proc/{second}").exists(), "the builder to stop with the service", 15)
