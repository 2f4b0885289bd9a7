"""SIGKILL at each step of backup, restore and move, then a restart: the tenant is ready on exactly one server with
all its data, and no scratch database, role or half-written backup file is left.

Each dying process is also the one that recovers what the previous one left (recovery runs at start), so N kill
points cost N + 1 process starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import FIXTURES
from tests.integration.lifecycle_support import checksums, fetch, password_of, url_on
from tests.integration.test_crash import env, request, request_until_killed, settled
from tests.process import ServiceProcess
from tests.servers_support import names_on, second_cluster, two_servers

__all__ = ["env"]  # the fixture, shared with test_crash

# In an order where the recovery a process runs at start never passes its own kill point (a recovered swap passes
# restore.after_swap).
RESTORE_POINTS = ["restore.after_record", "restore.after_scratch", "restore.after_swap", "restore.before_swap"]


async def test_kill_during_backup_and_restore(
    env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    base = env(FIXTURES / "ok", TENANTS_BACKUP_DIR=str(tmp_path / "bk"))
    database, log = f"t{tag}_cr", tmp_path / "log"
    first = ServiceProcess(base, log).start()
    made = (await request("POST", f"{first.url}/tenants", json={"id": "cr"})).json()
    await fetch(made["connection_url"], "INSERT INTO accounts (email) SELECT n || '@x' FROM generate_series(1, 20) n")
    backup = (await request("POST", f"{first.url}/tenants/cr/backups")).json()
    at_backup = await checksums(pg_url, database)
    await fetch(made["connection_url"], "INSERT INTO accounts (email) VALUES ('later@x')")
    assert first.stop() == 0

    dying = ServiceProcess({**base, "TENANTS_FAILPOINT": "backup.before_complete"}, log).start()
    await request_until_killed(dying, "POST", "/tenants/cr/backups")
    expected = await checksums(pg_url, database)
    for point in [*RESTORE_POINTS, None]:
        service = ServiceProcess({**base, "TENANTS_FAILPOINT": point} if point else base, log).start()
        try:
            # what the previous process left is finished or undone: one database, ready, the data of one side
            tenant = await settled(service.url, "cr")
            assert (tenant["state"], tenant["server"]) == ("ready", "default"), point
            assert (await names_on(pg_url, f"t{tag}_"))[0] == {database}, point
            assert await checksums(pg_url, database) == expected, point
            listed = (await request("GET", f"{service.url}/tenants/cr/backups")).json()["items"]
            assert [b["id"] for b in listed] == [backup["id"]]
            assert sorted(p.name for p in (tmp_path / "bk" / "cr").iterdir()) == [
                f"{backup['id']}.dump",
                f"{backup['id']}.json",
            ]
            assert (await fetch(made["connection_url"], "SELECT count(*) AS n FROM accounts"))[0]["n"] > 0
            if point is None:
                break
            await request_until_killed(service, "POST", "/tenants/cr/restore", json={"backup": backup["id"]})
            if point in ("restore.before_swap", "restore.after_swap"):
                expected = at_backup  # the checked copy was recorded for the swap: recovery finishes it
        finally:
            service.kill()
    assert expected == at_backup


async def test_kill_during_delete_and_undelete(
    env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    base, log = env(FIXTURES / "ok"), tmp_path / "log"
    dying = ServiceProcess({**base, "TENANTS_FAILPOINT": "delete.after_close"}, log).start()
    made = (await request("POST", f"{dying.url}/tenants", json={"id": "du"})).json()
    await fetch(made["connection_url"], "INSERT INTO accounts (email) VALUES ('kept@x')")
    before = await checksums(pg_url, f"t{tag}_du")
    await request_until_killed(dying, "DELETE", "/tenants/du", params={"confirm": "du"})

    dying = ServiceProcess({**base, "TENANTS_FAILPOINT": "undelete.after_mark"}, log).start()
    assert (await settled(dying.url, "du"))["state"] == "deleted"  # the close was finished
    await request_until_killed(dying, "POST", "/tenants/du/undelete")

    service = ServiceProcess(base, log).start()
    try:
        # the undelete is finished by the first recovery pass, which runs in the background from the start
        for _ in range(300):
            if (await request("GET", f"{service.url}/tenants/du")).json()["state"] == "ready":
                break
            await asyncio.sleep(0.1)
        assert (await request("GET", f"{service.url}/tenants/du")).json()["state"] == "ready"
        assert await checksums(pg_url, f"t{tag}_du") == before
        assert (await fetch(made["connection_url"], "SELECT email FROM accounts WHERE email = 'kept@x'"))[0]
    finally:
        service.stop()


# after_drop before after_switch: recovering a switched move passes move.after_drop.
MOVE_POINTS = [
    "move.after_record",
    "move.after_target",
    "move.after_freeze",
    "move.after_copy",
    "move.after_drop",
    "move.after_switch",
]


async def test_kill_at_each_step_of_a_move(
    env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    """Two servers of one version (pg_dump copies to the same or a newer one), the catalog on a third."""
    with second_cluster() as (_, url_a), second_cluster() as (_, url_b):
        urls = {"a": url_a, "b": url_b}
        base = env(FIXTURES / "ok", TENANTS_SERVERS=json.dumps(two_servers(url_a, url_b)))
        database, log = f"t{tag}_mc", tmp_path / "log"
        first = ServiceProcess(base, log).start()
        made = (await request("POST", f"{first.url}/tenants", json={"id": "mc", "server": "a"})).json()
        password = password_of(made["connection_url"])
        await fetch(
            made["connection_url"], "INSERT INTO accounts (email) SELECT n || '@x' FROM generate_series(1, 99) n"
        )
        before = await checksums(url_a, database)
        assert first.stop() == 0
        for point in [*MOVE_POINTS, None]:
            service = ServiceProcess({**base, "TENANTS_FAILPOINT": point} if point else base, log).start()
            try:
                tenant = await settled(service.url, "mc")
                assert (tenant["state"], tenant["progress"]) == ("ready", None), point
                here, there = tenant["server"], "b" if tenant["server"] == "a" else "a"
                # on exactly one server, with all its data, and the same password logs in there
                assert await names_on(urls[here], f"t{tag}_") == ({database}, {database}), point
                assert await names_on(urls[there], f"t{tag}_") == (set(), set()), point
                assert await checksums(urls[here], database) == before, point
                assert await fetch(url_on(urls[here], database, password, database), "SELECT 1")
                if point is None:  # and a move runs to its end: tenantctl move --wait
                    cli = [sys.executable, "-m", "service", "move", "mc", there, "--wait", "--json"]
                    env_cli = {**os.environ, "TENANTS_URL": service.url}
                    done = await asyncio.to_thread(subprocess.run, cli, env=env_cli, capture_output=True, text=True)
                    assert done.returncode == 0, done.stderr
                    assert json.loads(done.stdout)["server"] == there
                    assert await checksums(urls[there], database) == before
                    break
                started = await request("POST", f"{service.url}/tenants/mc/move", json={"server": there})
                assert started.status_code == 202, started.text  # the move runs on, and the process dies in it
                assert await asyncio.to_thread(service.wait_dead) != 0
            finally:
                service.kill()
