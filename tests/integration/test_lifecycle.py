"""A tenant's life after creation on two real clusters: backups, restore (in place and as a new tenant), delete
with undelete and purge, move with a writer running, drain (failures, undrain), rebalance.

Server ``a`` is the session cluster (which also holds the catalog), ``b`` a second cluster started for this module.
Tenants are shared between assertions to keep the module quick.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.config import Settings
from service.errors import (
    BackupNotFound,
    MoveRefused,
    TenantDeleted,
    TenantExists,
    TenantNotDeleted,
    TenantNotFound,
    TenantNotReady,
)
from service.store import lifecycle
from service.tenants.create import CreateRequest
from tests.conftest import FIXTURES
from tests.integration.lifecycle_support import checksums, fetch, password_of, url_on
from tests.integration.test_servers import provisioner_for
from tests.servers_support import names_on, second_cluster, two_servers

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="module")
def url_b() -> Iterator[str]:
    with second_cluster() as (_, url):
        yield url


async def test_backups_are_atomic_listed_newest_first_and_pruned(
    make_settings: MakeSettings, pg_url: str, url_b: str, tmp_path: Path
) -> None:
    settings = make_settings(
        FIXTURES / "ok", servers=two_servers(pg_url, url_b), backup_dir=tmp_path / "bk", backup_retention=2
    )
    async with provisioner_for(settings) as p:
        made = await p.create(CreateRequest("bk1", server="b"))
        assert made.connection_url is not None
        tenant_url = made.connection_url
        taken = []
        for n in range(3):
            await fetch(tenant_url, "INSERT INTO accounts (email) VALUES ($1)", f"u{n}@x.test")
            taken.append(await p.backup("bk1"))
        listed = await p.backups("bk1")
        assert [b.id for b in listed] == [taken[2].id, taken[1].id]  # newest first, the oldest pruned
        folder = tmp_path / "bk" / "bk1"
        assert sorted(x.name for x in folder.iterdir()) == sorted(
            f"{b.id}{ext}" for b in listed for ext in (".dump", ".json")
        )
        newest = listed[0]
        manifest = json.loads((folder / f"{newest.id}.json").read_text())
        assert manifest["sha256"] == newest.sha256
        assert manifest["size_bytes"] == newest.size_bytes
        assert (newest.server, newest.version, newest.state) == ("b", 1, "complete")
        with pytest.raises(BackupNotFound):
            await p.backup_info("bk1", taken[0].id)
    prefix = settings.db_prefix
    assert (await names_on(url_b, prefix))[0] == {f"{prefix}bk1"}
    assert password_of(tenant_url)
    assert await checksums(url_b, f"{prefix}bk1")


async def test_backup_api_answers_201_or_202_and_lists(
    make_settings: MakeSettings, serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(FIXTURES / "ok", backup_dir=tmp_path / "bk")
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "api1"})).status_code == 201
        made = await client.post("/tenants/api1/backups")
        assert made.status_code == 201, made.text
        assert made.headers["Location"] == f"/tenants/api1/backups/{made.json()['id']}"
        later = await client.post("/tenants/api1/backups", headers={"Prefer": "respond-async"})
        assert later.status_code == 202
        assert later.json()["state"] in ("writing", "complete")
        for _ in range(100):
            polled = (await client.get(later.headers["Location"])).json()
            if polled["state"] == "complete":
                break
            await asyncio.sleep(0.05)
        assert polled["state"] == "complete"
        assert polled["size_bytes"] > 0
        items = (await client.get("/tenants/api1/backups")).json()["items"]
        assert [b["id"] for b in items] == [later.json()["id"], made.json()["id"]]
        missing = await client.get("/tenants/api1/backups/20260101T000000000000Z-0000")
        assert (missing.status_code, missing.json()["code"]) == (404, "backup_not_found")
        assert (await client.get("/tenants/nobody/backups")).json()["code"] == "tenant_not_found"


async def test_restore_in_place_and_as_a_new_tenant(
    make_settings: MakeSettings, pg_url: str, url_b: str, tmp_path: Path
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b), backup_dir=tmp_path / "bk")
    prefix = settings.db_prefix
    async with provisioner_for(settings) as p:
        made = await p.create(CreateRequest("rs1", server="b"))
        assert made.connection_url is not None
        url = made.connection_url
        await fetch(url, "INSERT INTO accounts (email) SELECT 'u' || n || '@x.test' FROM generate_series(1, 50) n")
        taken = await p.backup("rs1")
        at_backup = await checksums(url_b, f"{prefix}rs1")
        await fetch(url, "INSERT INTO accounts (email) VALUES ('later@x.test')")
        await fetch(url, "UPDATE accounts SET name = 'changed' WHERE id < 10")
        assert await checksums(url_b, f"{prefix}rs1") != at_backup

        restored, new_url = await p.restore("rs1", taken.id)
        assert new_url is None
        assert (restored.state, restored.server, restored.version, restored.step) == ("ready", "b", 1, None)
        assert await checksums(url_b, f"{prefix}rs1") == at_backup  # every table, history included
        # the same role and password still work, and can write
        await fetch(url, "INSERT INTO accounts (email) VALUES ('after@x.test')")
        assert (await names_on(url_b, prefix))[0] == {f"{prefix}rs1"}  # the old copy and the scratch are gone

        copy, copy_url = await p.restore("rs1", taken.id, as_id="rs2")
        assert copy_url is not None
        assert copy_url != url
        assert (copy.id, copy.state, copy.version) == ("rs2", "ready", 1)
        copied = await checksums(pg_url if copy.server == "a" else url_b, f"{prefix}rs2")
        assert copied == at_backup
        assert len(await fetch(copy_url, "SELECT * FROM accounts")) == 51  # the seed row and 50
        with pytest.raises(TenantExists):
            await p.restore("rs1", taken.id, as_id="rs2")
        assert (await p.get("rs1")).state == "ready"


async def test_delete_undelete_and_purge(make_settings: MakeSettings, pg_url: str, url_b: str, tmp_path: Path) -> None:
    values = {"servers": two_servers(pg_url, url_b), "backup_dir": tmp_path / "bk"}
    settings = make_settings(FIXTURES / "ok", **values)
    prefix = settings.db_prefix
    async with provisioner_for(settings) as p:
        made = await p.create(CreateRequest("dl1", server="b"))
        other = await p.create(CreateRequest("dl2", server="b"))
        assert made.connection_url is not None
        url = made.connection_url
        await fetch(url, "INSERT INTO accounts (email) SELECT n || '@x' FROM generate_series(1, 30) n")
        await p.backup("dl1")
        before = await checksums(url_b, f"{prefix}dl1")

        await p.delete("dl1", confirm="dl1")
        gone = await p.get("dl1")
        assert gone.state == "deleted"
        assert gone.deleted_at is not None
        assert [t.id for t in await p.list(state="deleted", after=None, limit=10)] == ["dl1"]
        with pytest.raises(asyncpg.PostgresError):  # the role cannot log in
            await fetch(url, "SELECT 1")
        with pytest.raises(TenantDeleted):
            await p.create(CreateRequest("dl1"))
        with pytest.raises(TenantNotReady):
            await p.backup("dl1")
        assert len(await p.backups("dl1")) == 1  # kept while deleted

        back = await p.undelete("dl1")
        assert (back.state, back.deleted_at, back.server) == ("ready", None, "b")
        assert await checksums(url_b, f"{prefix}dl1") == before
        assert (await fetch(url, "SELECT count(*) AS n FROM accounts"))[0]["n"] == 31  # same password, same data
        with pytest.raises(TenantNotDeleted):
            await p.undelete("dl1")

        await p.delete("dl1", confirm="dl1")
        await p.delete("dl1", confirm="dl1", purge=True)
        with pytest.raises(TenantNotFound):
            await p.get("dl1")
        assert not (tmp_path / "bk" / "dl1").exists()
        # a move a dead process left (before recovery ran) is settled first: undone, then the delete goes on
        async with p.server.catalog() as conn:
            step = {"op": "move", "stage": "start", "from": "b", "to": "a"}
            await lifecycle.set_step(conn, "dl2", step, "moving")
        await p.delete("dl2", confirm="dl2")
        assert ((await p.get("dl2")).state, (await p.get("dl2")).step) == ("deleted", None)
    assert await names_on(url_b, prefix) == ({f"{prefix}dl2"}, {f"{prefix}dl2"})

    # Past the retention, the next recovery purges it.
    async with provisioner_for(make_settings(FIXTURES / "ok", delete_retention=0, **values)) as p:
        assert other.tenant.id == "dl2"
        assert await p.recover() >= 1
        with pytest.raises(TenantNotFound):
            await p.get("dl2")
        assert (await p.create(CreateRequest("dl2"))).created  # the id is free again
    assert (await names_on(url_b, prefix))[0] == set()


async def _write_until(url: str, stop: asyncio.Event, committed: list[str], failed: list[str]) -> None:
    """Insert rows one at a time through the tenant's URL; note which returned success and which failed."""
    conn: asyncpg.Connection | None = None
    n = 0
    while not stop.is_set():
        n += 1
        email = f"w{n}@x"
        try:
            if conn is None:
                conn = await asyncpg.connect(url, timeout=2)
            await conn.execute("INSERT INTO accounts (email) VALUES ($1)", email)
            committed.append(email)
        except Exception:  # any failure means "not acknowledged": the writer counts it and goes on
            failed.append(email)
            if conn is not None:
                conn.terminate()
            conn = None
            await asyncio.sleep(0.02)
    if conn is not None:
        await conn.close()


async def test_move_with_a_writer_loses_no_committed_write(
    make_settings: MakeSettings, pg_url: str, url_b: str, tmp_path: Path
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b))
    prefix, database = settings.db_prefix, f"{settings.db_prefix}mv1"
    async with provisioner_for(settings) as p:
        made = await p.create(CreateRequest("mv1", server="a"))
        assert made.connection_url is not None
        await fetch(made.connection_url, "INSERT INTO accounts (email) SELECT n || '@x' FROM generate_series(1, 500) n")
        stop, committed, failed = asyncio.Event(), [], []
        writer = asyncio.create_task(_write_until(made.connection_url, stop, committed, failed))
        await asyncio.sleep(0.3)
        moved = await p.move("mv1", "b", wait=True)
        stop.set()
        await writer
        # ready on b as soon as its role may connect there; the source is dropped after the answer, recorded
        assert (moved.server, moved.state) == ("b", "ready")
        assert moved.step is None or moved.step["stage"] == "cleanup"
        on_b = url_on(url_b, database, password_of(made.connection_url), database)  # the same password logs in
        found = {r["email"] for r in await fetch(on_b, "SELECT email FROM accounts")}
        assert committed
        assert set(committed) <= found  # every insert that returned success is on the target
        assert await _settled(p, "mv1") == ("b", "ready")
        assert await names_on(pg_url, prefix) == (set(), set())  # the source was dropped after the switch
        assert await names_on(url_b, prefix) == ({database}, {database})
        assert (await p.schema("mv1")).status == "up_to_date"

        with pytest.raises(MoveRefused):
            await p.move("mv1", "b")
        versions = [(await fetch(u, "SHOW server_version_num"))[0][0] for u in (pg_url, url_b)]
        if int(versions[0]) // 10000 < int(versions[1]) // 10000:  # on CI: from PostgreSQL 18 back to 15
            with pytest.raises(MoveRefused):
                await p.move("mv1", "a", wait=True)
            assert (await p.get("mv1")).server == "b"
            return
        # a dead process switched a move but left its source: the next move finishes that first, then runs
        await fetch(pg_url, f'CREATE DATABASE "{database}"')
        async with p.server.catalog() as conn:
            await lifecycle.set_step(conn, "mv1", {"op": "move", "stage": "cleanup", "from": "a", "to": "b"})
        back = await p.move("mv1", "a", wait=True)
        assert back.server == "a"
        assert len(await fetch(url_on(pg_url, database, password_of(made.connection_url), database), "SELECT 1")) == 1


async def _settled(p: Any, tenant_id: str) -> tuple[str, str]:
    """Server and state once the move's step is cleared (the source's drop runs after the move's answer)."""
    for _ in range(300):
        tenant = await p.get(tenant_id)
        if tenant.step is None:
            break
        assert (tenant.state, tenant.step["stage"]) == ("ready", "cleanup")  # GET tells the truth meanwhile
        await asyncio.sleep(0.05)
    return tenant.server, tenant.state


async def test_drain_empties_a_server_and_placement_skips_it(
    make_settings: MakeSettings, serve: Callable[..., Any], pg_url: str, url_b: str
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b), rollout_poll_interval=0.2)
    async with serve(settings) as client:
        for tid in ("dr1", "dr2", "dr3"):
            assert (await client.post("/tenants", json={"id": tid, "server": "a"})).status_code == 201
        started = await client.post("/servers/a/drain", json={"concurrency": 2})
        assert started.status_code == 202, started.text
        assert started.json()["draining"] is True
        for _ in range(600):
            state = (await client.get("/servers/a/drain")).json()
            if state["state"] != "running":
                break
            await asyncio.sleep(0.1)
        assert (state["state"], state["tenants"], state["moved"], state["failed"]) == ("succeeded", 0, 3, 0)
        servers = {s["name"]: s for s in (await client.get("/servers")).json()["items"]}
        assert (servers["a"]["draining"], servers["a"]["tenants"], servers["b"]["tenants"]) == (True, 0, 3)
        assert (await names_on(pg_url, settings.db_prefix))[0] == set()
        # placement skips it, and naming it is refused
        assert (await client.post("/tenants", json={"id": "dr4"})).json()["server"] == "b"
        refused = await client.post("/tenants", json={"id": "dr5", "server": "a"})
        assert (refused.status_code, refused.json()["code"]) == (409, "server_draining")
        refused = await client.post("/tenants/dr1/move", json={"server": "a"})
        assert (refused.status_code, refused.json()["code"]) == (409, "server_draining")
        # undrained, it takes tenants again
        assert (await client.post("/servers/a/undrain")).json()["draining"] is False
        assert (await client.post("/tenants", json={"id": "dr5"})).json()["server"] == "a"


async def _settled_drain(client: Any, server: str) -> dict[str, Any]:
    for _ in range(600):
        state: dict[str, Any] = (await client.get(f"/servers/{server}/drain")).json()
        if state["state"] != "running":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the drain of {server} did not end: {state}")


async def test_failed_moves_say_why_on_the_tenant_and_in_the_drain(
    make_settings: MakeSettings, serve: Callable[..., Any], pg_url: str, url_b: str
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b), rollout_poll_interval=0.2)
    foreign = f"{settings.db_prefix}le1"
    async with serve(settings) as client:
        for tid in ("le1", "le2"):
            assert (await client.post("/tenants", json={"id": tid, "server": "a"})).status_code == 201
        await fetch(url_b, f'CREATE ROLE "{foreign}"')  # a role of the tenant's name, not ours: the move must fail
        try:
            # a background move fails: the reason is on the tenant, not only in its events
            assert (await client.post("/tenants/le1/move", json={"server": "b"})).status_code == 202
            for _ in range(300):
                tenant = (await client.get("/tenants/le1")).json()
                if tenant["state"] == "ready":
                    break
                await asyncio.sleep(0.1)
            assert (tenant["server"], tenant["last_error"]["code"], tenant["last_error"]["op"]) == (
                "a",
                "role_exists",
                "move",
            )
            assert tenant["last_error"]["at"]
            # a drain with a failure budget of one moves the other tenant and says why le1 stayed
            assert (await client.post("/servers/a/drain", json={"max_failures": 1})).status_code == 202
            drained = await _settled_drain(client, "a")
            assert (drained["state"], drained["moved"], drained["failed"], drained["tenants"]) == ("failed", 1, 1, 1)
            assert drained["failures"]["le1"]["code"] == "role_exists"
            rollout = (await client.get(f"/rollouts/{drained['rollout']}")).json()
            assert (rollout["kind"], rollout["server"], rollout["to_version"]) == ("drain", "a", None)
            items = {t["id"]: t for t in rollout["tenants"]}
            assert (items["le2"]["state"], items["le2"]["to_server"]) == ("succeeded", "b")
            assert (items["le1"]["state"], items["le1"]["error"]["code"]) == ("failed", "role_exists")
        finally:
            await fetch(url_b, f'DROP ROLE "{foreign}"')
        # draining again is a new drain of what is left; the success clears the tenant's last error
        again = (await client.post("/servers/a/drain")).json()
        assert again["rollout"] != drained["rollout"]
        drained = await _settled_drain(client, "a")
        assert (drained["state"], drained["moved"], drained["tenants"], drained["failures"]) == ("succeeded", 1, 0, {})
        tenant = (await client.get("/tenants/le1")).json()
        assert (tenant["server"], tenant["last_error"]) == ("b", None)
        assert (await client.post("/servers/a/undrain")).json()["draining"] is False


async def test_rebalance_evens_tenant_counts_as_a_rollout_of_moves(
    make_settings: MakeSettings, serve: Callable[..., Any], pg_url: str, url_b: str
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b), rollout_poll_interval=0.2)
    async with serve(settings) as client:
        for tid in ("rb1", "rb2", "rb3", "rb4", "rb5"):
            assert (await client.post("/tenants", json={"id": tid, "server": "a"})).status_code == 201
        started = await client.post("/rebalance", json={"concurrency": 2})
        assert started.status_code == 202, started.text
        rollout = started.json()
        assert (rollout["kind"], rollout["total"]) == ("rebalance", 2)  # 5/0 -> 3/2
        assert {t["to_server"] for t in rollout["tenants"]} == {"b"}
        for _ in range(600):
            rollout = (await client.get(started.headers["location"])).json()
            if rollout["state"] != "running":
                break
            await asyncio.sleep(0.1)
        assert (rollout["state"], rollout["done"]) == ("succeeded", 2), rollout
        servers = {s["name"]: s["tenants"] for s in (await client.get("/servers")).json()["items"]}
        assert servers == {"a": 3, "b": 2}
        assert (await names_on(url_b, settings.db_prefix))[0] == {
            f"{settings.db_prefix}{t['id']}" for t in rollout["tenants"]
        }
        # even already: nothing to move
        assert (await client.post("/rebalance")).json()["state"] == "succeeded"
        # moves are not migrations: the rollout migration histogram counts none of them
        assert "tenant_rollout_migration_seconds_count 0.0" in (await client.get("/metrics")).text


async def test_undrain_cancels_the_drain_after_its_moves_in_flight(
    make_settings: MakeSettings, serve: Callable[..., Any], pg_url: str, url_b: str
) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b), rollout_poll_interval=0.2)
    async with serve(settings) as client:
        for tid in ("ud1", "ud2", "ud3", "ud4"):
            assert (await client.post("/tenants", json={"id": tid, "server": "a"})).status_code == 201
        started = (await client.post("/servers/a/drain", json={"concurrency": 1})).json()
        undrained = (await client.post("/servers/a/undrain")).json()
        assert (undrained["draining"], undrained["state"]) == (False, None)
        for _ in range(300):
            rollout = (await client.get(f"/rollouts/{started['rollout']}")).json()
            if rollout["state"] != "running":
                break
            await asyncio.sleep(0.1)
        assert rollout["state"] == "cancelled", rollout
        assert rollout["skipped"] >= 1
        assert rollout["done"] + rollout["skipped"] == 4
        for tid in ("ud1", "ud2", "ud3", "ud4"):  # each where its move (if any) left it, ready
            assert (await client.get(f"/tenants/{tid}")).json()["state"] == "ready"
        servers = {s["name"]: s for s in (await client.get("/servers")).json()["items"]}
        assert (servers["a"]["draining"], servers["a"]["tenants"]) == (False, 4 - rollout["done"])
        # it takes tenants again
        assert (await client.post("/tenants", json={"id": "ud5", "server": "a"})).status_code == 201
