"""Fleet rollouts over HTTP: tenants made on 0000-0001, a 0002 added, a new app started, the fleet rolled out.

Canaries run first and one at a time; failures stop the rollout; a cancel stops it between tenants; tenants at the
target are left out; an older target leaves the newer files pending.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from service.config import Settings
from service.store.db import with_database
from tests.conftest import FIXTURES

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

PROBLEM = "application/problem+json"
ADD_PLAN = 'ALTER TABLE "accounts" ADD COLUMN "plan" text;\n'
# Fails in the databases of tenants whose id starts with "bad" (database names are <prefix>_<id>).
FAIL_ON_BAD = (
    "DO $$ BEGIN IF current_database() ~ '_bad' THEN RAISE EXCEPTION 'boom'; END IF; END $$;\n"
    "--> statement-breakpoint\n" + ADD_PLAN
)


def sleepy(seconds: float) -> str:
    return f"SELECT pg_sleep({seconds});\n--> statement-breakpoint\n" + ADD_PLAN


def settings_for(make_settings: MakeSettings, migrations: Path, **extra: object) -> Settings:
    return make_settings(migrations, rollout_poll_interval=0.2, max_parallel=8, pool_size=16, **extra)


async def create(client: httpx.AsyncClient, *ids: str) -> None:
    answers = await asyncio.gather(*(client.post("/tenants", json={"id": i}) for i in ids))
    assert [a.status_code for a in answers] == [201] * len(ids), [a.text for a in answers if a.status_code != 201]


async def create_as(client: httpx.AsyncClient, headers: dict[str, str], *ids: str) -> None:
    for i in ids:
        assert (await client.post("/tenants", json={"id": i}, headers=headers)).status_code == 201


async def finished(client: httpx.AsyncClient, rollout_id: int) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            body: dict[str, Any] = (await client.get(f"/rollouts/{rollout_id}")).json()
            if body["state"] != "running":
                return body
            await asyncio.sleep(0.05)


async def until(client: httpx.AsyncClient, rollout_id: int, done: int) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            body: dict[str, Any] = (await client.get(f"/rollouts/{rollout_id}")).json()
            if body["done"] >= done:
                return body
            await asyncio.sleep(0.02)


def by_id(rollout: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in rollout["tenants"]}


async def versions(client: httpx.AsyncClient) -> dict[str, int | None]:
    items = (await client.get("/tenants", params={"limit": 500})).json()["items"]
    return {t["id"]: t["version"] for t in items}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    return body


async def test_rollout_migrates_the_fleet_canaries_first(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, caplog: pytest.LogCaptureFixture
) -> None:
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations)
    fleet = [f"t{i:02d}" for i in range(20)]
    async with serve(settings) as client:
        await create(client, *fleet)
    (migrations / "0002_plan.sql").write_text(ADD_PLAN)
    async with serve(settings) as client:
        await create(client, "fresh")  # made at 0002: not part of the rollout
        r = await client.post("/rollouts", json={"concurrency": 6, "canary": 3})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/rollouts/{r.json()['id']}"
        started = r.json()
        assert (started["to_version"], started["total"], started["canary"]) == (2, 20, 3)
        assert [t["id"] for t in started["tenants"]] == fleet
        assert all(t["from_version"] == 1 and t["to_version"] == 2 for t in started["tenants"])

        done = await finished(client, started["id"])
        assert done["state"] == "succeeded", done
        assert (done["done"], done["failed"], done["skipped"], done["running"], done["pending"]) == (20, 0, 0, 0, 0)
        assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in done["tenants"])
        assert all(t["duration_ms"] > 0 and t["error"] is None for t in done["tenants"])
        assert [t["canary"] for t in done["tenants"]] == [True] * 3 + [False] * 17
        spans = [
            (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"])) for t in done["tenants"]
        ]
        canaries, rest = spans[:3], spans[3:]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(canaries))  # one at a time
        assert max(end for _, end in canaries) <= min(start for start, _ in rest)
        assert any(b[0] < a[1] for a, b in itertools.pairwise(rest))  # in parallel
        assert [
            r.message for r in caplog.records if r.name == "service.fleet.rollouts" and r.levelno >= logging.WARNING
        ] == []

        fleet_now = (await client.get("/fleet")).json()
        assert fleet_now["by_status"] == {"failed": 0, "drifted": 0, "behind": 0, "up_to_date": 21}
        schema = (await client.get("/tenants/t07/schema")).json()
        assert (schema["status"], schema["current_version"]) == ("up_to_date", 2)
        events = (await client.get("/tenants/t07/events")).json()["items"]
        assert (events[0]["kind"], events[0]["actor"]) == ("migrate", f"rollout:{started['id']}")

        listed = (await client.get("/rollouts")).json()
        assert [i["id"] for i in listed["items"]] == [started["id"]]
        assert "tenants" not in listed["items"][0]
        metrics = (await client.get("/metrics")).text
        assert "tenant_rollout_migration_seconds_count 20.0" in metrics

        # Every tenant is checked for drift after its migration: canaries as they ran, the rest in one sweep once
        # the rollout ended.
        checked = await drift_checked(client, by_id(done))
        assert checked == {i: True for i in fleet}


async def drift_checked(client: httpx.AsyncClient, items: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Wait until each tenant has a drift result newer than its migration; return whether each is clean."""
    async with asyncio.timeout(20):
        while True:
            found: dict[str, bool] = {}
            for tenant_id, item in items.items():
                drift = (await client.get(f"/tenants/{tenant_id}/schema")).json()["drift"]
                if (drift is not None and drift["checked_at"] >= item["finished_at"]) or item["canary"]:
                    assert drift is not None, tenant_id
                    found[tenant_id] = drift["clean"]
            if len(found) == len(items):
                return found
            await asyncio.sleep(0.1)


async def test_a_busy_tenant_is_waited_for_within_the_bound(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    """A rollout takes each tenant's lock as any operation does: it waits for a tenant another replica holds, up to
    TENANTS_BUSY_TIMEOUT, and past it records the tenant as failed with tenant_busy."""
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations, busy_timeout=1.5)
    fleet = ["b1", "b2", "b3", "b4"]
    async with serve(settings) as client:
        await create(client, *fleet)
    (migrations / "0002_plan.sql").write_text(ADD_PLAN)
    other = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
    try:
        for held in ("b2", "b3"):
            await other.execute("SELECT pg_advisory_lock($1, hashtext($2))", 0x7E4A1, held)
        async with serve(settings) as client:
            r = await client.post("/rollouts", json={"canary": 0, "concurrency": 2, "max_failures": 1})
            assert r.status_code == 202, r.text
            # Release b2 only once its worker is waiting for it (on a loaded machine that may take a while).
            async with asyncio.timeout(20):
                while True:
                    rollout = (await client.get(f"/rollouts/{r.json()['id']}")).json()
                    if by_id(rollout)["b2"]["state"] == "running":
                        break
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            await other.execute("SELECT pg_advisory_unlock($1, hashtext($2))", 0x7E4A1, "b2")
            done = await finished(client, r.json()["id"])
            states = {i: (t["state"], (t["error"] or {}).get("code")) for i, t in by_id(done).items()}
            assert states == {
                "b1": ("succeeded", None),
                "b2": ("succeeded", None),
                "b3": ("failed", "tenant_busy"),
                "b4": ("succeeded", None),
            }
            assert by_id(done)["b2"]["duration_ms"] >= 250
            assert await versions(client) == {"b1": 2, "b2": 2, "b3": 1, "b4": 2}
    finally:
        await other.close()


async def test_failures_stop_the_rollout(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations)
    async with serve(settings) as client:
        await create(client, "a1", "a2", "bad1", "bad2", "c1", "c2", "c3")
    (migrations / "0002_plan.sql").write_text(FAIL_ON_BAD)
    async with serve(settings) as client:
        # A canary failure stops at once, whatever max_failures allows.
        first = (await client.post("/rollouts", json={"canary": 3, "max_failures": 5})).json()
        assert [t["id"] for t in first["tenants"] if t["canary"]] == ["a1", "a2", "bad1"]
        first = await finished(client, first["id"])
        assert first["state"] == "failed"
        states = {i: t["state"] for i, t in by_id(first).items()}
        assert states == {
            "a1": "succeeded",
            "a2": "succeeded",
            "bad1": "failed",
            "bad2": "skipped",
            "c1": "skipped",
            "c2": "skipped",
            "c3": "skipped",
        }
        error = by_id(first)["bad1"]["error"]
        assert (error["code"], error["version"], error["file"]) == ("migration_failed", 2, "0002_plan.sql")
        assert "boom" in error["message"]
        assert await versions(client) == {"a1": 2, "a2": 2, "bad1": 1, "bad2": 1, "c1": 1, "c2": 1, "c3": 1}

        # After the canaries, more than max_failures failures stop it; the order given is the run order.
        body = {"tenants": ["c1", "bad1", "bad2", "c2", "c3"], "canary": 1, "concurrency": 1, "max_failures": 1}
        second = (await client.post("/rollouts", json=body)).json()
        assert [t["id"] for t in second["tenants"]] == body["tenants"]
        second = await finished(client, second["id"])
        assert second["state"] == "failed"
        assert [t["state"] for t in second["tenants"]] == ["succeeded", "failed", "failed", "skipped", "skipped"]
        assert (second["done"], second["failed"], second["skipped"]) == (1, 2, 2)

        listed = (await client.get("/rollouts", params={"limit": 1})).json()
        assert [i["id"] for i in listed["items"]] == [second["id"]]
        older = (await client.get("/rollouts", params={"before": listed["next"]})).json()
        assert [i["id"] for i in older["items"]] == [first["id"]]
        assert older["next"] is None


async def test_cancel_stops_between_tenants(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations)
    fleet = [f"c{i}" for i in range(6)]
    async with serve(settings) as client:
        await create(client, *fleet)
    (migrations / "0002_plan.sql").write_text(sleepy(0.15))
    async with serve(settings) as client:
        started = (await client.post("/rollouts", json={"canary": 0, "concurrency": 1})).json()
        await until(client, started["id"], 1)
        cancel = await client.post(f"/rollouts/{started['id']}/cancel")
        assert cancel.status_code in (200, 202), cancel.text
        assert cancel.json()["cancel_requested"] is True
        ended = await finished(client, started["id"])
        assert ended["state"] == "cancelled"
        assert ended["running"] == ended["pending"] == 0
        assert 1 <= ended["done"] <= 3
        assert ended["skipped"] == 6 - ended["done"]
        skipped = [t["id"] for t in ended["tenants"] if t["state"] == "skipped"]
        now = await versions(client)
        assert all(now[i] == 1 for i in skipped)

        again = await client.post(f"/rollouts/{started['id']}/cancel")
        assert again.status_code == 200
        assert again.json()["state"] == "cancelled"

        # The next rollout takes only the tenants left behind.
        rest = (await client.post("/rollouts", json={"canary": 0, "concurrency": 4})).json()
        assert sorted(t["id"] for t in rest["tenants"]) == sorted(skipped)
        assert (await finished(client, rest["id"]))["state"] == "succeeded"
        assert_problem(await client.post(f"/rollouts/{rest['id']}/cancel"), 409, "rollout_finished")
        assert set((await versions(client)).values()) == {2}


async def test_older_target_and_tenants_at_target(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations)
    async with serve(settings) as client:
        await create(client, "o1", "o2", "o3")
    (migrations / "0002_plan.sql").write_text(ADD_PLAN)
    (migrations / "0003_tier.sql").write_text('ALTER TABLE "accounts" ADD COLUMN "tier" text;\n')
    async with serve(settings) as client:
        to_two = (await client.post("/rollouts", json={"to_version": 2})).json()
        assert (to_two["to_version"], to_two["total"]) == (2, 3)
        assert (await finished(client, to_two["id"]))["state"] == "succeeded"
        schema = (await client.get("/tenants/o2/schema")).json()
        assert schema["current_version"] == 2
        assert [p["version"] for p in schema["pending"]] == [3]

        # Nobody is below 2 any more: an empty rollout is born succeeded.
        empty = await client.post("/rollouts", json={"to_version": 2, "tenants": ["o1", "o2"]})
        assert empty.status_code == 202
        assert (empty.json()["state"], empty.json()["total"], empty.json()["tenants"]) == ("succeeded", 0, [])

        latest = (await client.post("/rollouts", json={"tenants": ["o3", "o1"], "canary": 1})).json()
        assert [(t["id"], t["from_version"], t["canary"]) for t in latest["tenants"]] == [
            ("o3", 2, True),
            ("o1", 2, False),
        ]
        assert (await finished(client, latest["id"]))["state"] == "succeeded"
        assert await versions(client) == {"o1": 3, "o2": 2, "o3": 3}


INVALID = [
    {"concurrency": 0},
    {"concurrency": 65},
    {"canary": -1},
    {"max_failures": -1},
    {"to_version": 7},
    {"to_version": -1},
    {"to_version": "1"},
    {"concurrency": 2.0},
    {"tenants": []},
    {"tenants": ["Not-an-id"]},
    {"tenants": ["r1", "r1"]},
    {"force": True},
]


async def test_invalid_requests(make_settings: MakeSettings, serve: Serve) -> None:
    async with serve(make_settings(FIXTURES / "ok")) as client:
        for body in INVALID:
            problem = assert_problem(await client.post("/rollouts", json=body), 422, "invalid_request")
            assert problem["detail"], body
        assert (await client.get("/rollouts")).json() == {"items": [], "next": None}


async def test_errors_and_one_rollout_at_a_time(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations, admin_token=SecretStr("a" * 32), read_token=SecretStr("r" * 32))
    admin = {"Authorization": "Bearer " + "a" * 32}
    read = {"Authorization": "Bearer " + "r" * 32}
    async with serve(settings) as client:
        await create_as(client, admin, "e1", "e2")
    (migrations / "0002_plan.sql").write_text(sleepy(0.3))
    async with serve(settings) as client:
        client.headers.update(admin)
        missing = assert_problem(
            await client.post("/rollouts", json={"tenants": ["e1", "nope"]}), 404, "tenant_not_found"
        )
        assert missing["tenants"] == ["nope"]
        assert_problem(await client.get("/rollouts/999"), 404, "rollout_not_found")
        assert_problem(await client.post("/rollouts/999/cancel"), 404, "rollout_not_found")
        assert_problem(await client.post("/rollouts", headers=read), 403, "forbidden")
        assert_problem(await client.get("/rollouts", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")

        started = await client.post("/rollouts", json={"canary": 0})
        assert started.status_code == 202
        busy = assert_problem(await client.post("/rollouts"), 409, "rollout_in_progress")
        assert busy["rollout"] == started.json()["id"]
        assert (await client.get(f"/rollouts/{started.json()['id']}", headers=read)).status_code == 200
        assert (await finished(client, started.json()["id"]))["state"] == "succeeded"


async def test_resumed_only_where_the_target_is_loaded(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    migrations = migration_dir("ok")
    settings = settings_for(make_settings, migrations)
    async with serve(settings) as client:
        await create(client, "s1", "s2", "s3", "s4")
    target = migrations / "0002_plan.sql"
    target.write_text(sleepy(0.2))
    async with serve(settings) as client:
        started = (await client.post("/rollouts", json={"canary": 0, "concurrency": 1})).json()
        await until(client, started["id"], 1)
    # Stopped mid-rollout (a deploy); the next process comes up without the target's file.
    target.unlink()
    async with serve(settings) as client:
        left = (await client.get(f"/rollouts/{started['id']}")).json()
        await asyncio.sleep(0.5)  # a few looks
        assert (await client.get(f"/rollouts/{started['id']}")).json() == left, "not driven here"
        assert (left["state"], left["failed"]) == ("running", 0)
        assert left["pending"] >= 1
        assert_problem(await client.post("/rollouts"), 409, "rollout_in_progress")
    target.write_text(sleepy(0.2))
    async with serve(settings) as client:
        final = await finished(client, started["id"])
        assert final["state"] == "succeeded", final
        assert sum(t["attempts"] for t in final["tenants"]) in (4, 5)  # the one stopped mid-migration ran again
        assert set((await versions(client)).values()) == {2}
