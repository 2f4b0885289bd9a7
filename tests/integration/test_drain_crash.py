"""SIGKILL the process driving a drain in the middle of its moves, twice, then a restart: the drain (a rollout of
moves) is resumed by the next process and ends with every tenant on the other server, ready, with all its data,
and nothing of them left on the drained one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES
from tests.integration.lifecycle_support import checksums, fetch, password_of, url_on
from tests.integration.test_crash import env, request
from tests.process import ServiceProcess
from tests.servers_support import names_on, second_cluster, two_servers

__all__ = ["env"]  # the fixture, shared with test_crash

TENANTS = ("d1", "d2", "d3", "d4")
# Before the switch (undone by recovery, moved again by the resumed drain), then after it (finished by recovery,
# counted as moved by the resumed drain).
KILL_POINTS = ("move.after_copy", "move.after_switch")


async def drain_settled(url: str) -> dict[str, Any]:
    """The drain once it ended (the background loops resume it: poll)."""
    for _ in range(600):
        drain: dict[str, Any] = (await request("GET", f"{url}/servers/a/drain")).json()
        if drain["state"] != "running":
            return drain
        await asyncio.sleep(0.1)
    raise AssertionError(f"the drain did not end: {drain}")


async def test_a_drain_resumes_after_its_driver_is_killed(
    env: Callable[..., dict[str, str]], tag: str, tmp_path: Path
) -> None:
    with second_cluster() as (_, url_a), second_cluster() as (_, url_b):
        base = env(
            FIXTURES / "ok",
            TENANTS_SERVERS=json.dumps(two_servers(url_a, url_b)),
            TENANTS_ROLLOUT_POLL_INTERVAL="0.3",
            TENANTS_RECOVERY_INTERVAL="0.3",
        )
        prefix, log = f"t{tag}_", tmp_path / "log"
        first = ServiceProcess(base, log).start()
        passwords, before = {}, {}
        for tid in TENANTS:
            made = (await request("POST", f"{first.url}/tenants", json={"id": tid, "server": "a"})).json()
            passwords[tid] = password_of(made["connection_url"])
            await fetch(
                made["connection_url"], "INSERT INTO accounts (email) SELECT n || '@x' FROM generate_series(1, 50) n"
            )
            before[tid] = await checksums(url_a, f"{prefix}{tid}")
        assert first.stop() == 0

        for n, point in enumerate(KILL_POINTS):
            dying = ServiceProcess({**base, "TENANTS_FAILPOINT": point}, log).start()
            try:
                if n == 0:
                    started = await request("POST", f"{dying.url}/servers/a/drain", json={"concurrency": 2})
                    assert started.status_code == 202, started.text
                # the first process dies in the drain it started; the next one in the drain it resumed
                assert await asyncio.to_thread(dying.wait_dead) != 0, point
            finally:
                dying.kill()

        service = ServiceProcess(base, log).start()
        try:
            drain = await drain_settled(service.url)
            assert (drain["state"], drain["tenants"], drain["moved"], drain["failed"]) == ("succeeded", 0, 4, 0)
            rollout = (await request("GET", f"{service.url}/rollouts/{drain['rollout']}")).json()
            assert {t["id"]: (t["state"], t["to_server"]) for t in rollout["tenants"]} == {
                tid: ("succeeded", "b") for tid in TENANTS
            }
            assert max(t["attempts"] for t in rollout["tenants"]) >= 2  # a move its killed driver began, again
            for tid in TENANTS:
                tenant = (await request("GET", f"{service.url}/tenants/{tid}")).json()
                assert (tenant["state"], tenant["server"], tenant["progress"]) == ("ready", "b", None), tid
                database = f"{prefix}{tid}"
                assert await checksums(url_b, database) == before[tid], tid
                assert await fetch(url_on(url_b, database, passwords[tid], database), "SELECT 1")
            # nothing orphaned: no database or role of a moved tenant on the drained server
            assert await names_on(url_a, prefix) == (set(), set())
            assert await names_on(url_b, prefix) == ({f"{prefix}{t}" for t in TENANTS},) * 2
            servers = {s["name"]: s for s in (await request("GET", f"{service.url}/servers")).json()["items"]}
            assert (servers["a"]["draining"], servers["a"]["tenants"], servers["b"]["tenants"]) == (True, 0, 4)
        finally:
            service.stop()
