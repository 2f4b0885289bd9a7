"""One tenant server of two stopped while the service runs: requests touching it answer 503 database_unavailable
naming it, the other server and the catalog keep working, placement sends new tenants to the server that answers,
queued creations wait for their server, and 30 s after it is back no tenant is in flight, without a restart.

Server ``a`` is the session cluster (it also holds the catalog and is never stopped), ``b`` a cluster of this module
that the tests stop and start (one cluster for the module: starting one costs about a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres
from tests.conftest import running
from tests.integration.test_outage import SLOW_FILE, TRANSITIONAL, with_slow_file
from tests.servers_support import Relay, names_on, second_cluster, two_servers

MakeSettings = Callable[..., Settings]
SUCCESS = {200, 201, 202, 204}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def cluster_b() -> Iterator[tuple[EmbeddedPostgres, str]]:
    with second_cluster() as found:
        yield found


def outage_settings(make_settings: MakeSettings, migrations: Path, url_a: str, url_b: str) -> Settings:
    return make_settings(
        migrations,
        servers=two_servers(url_a, url_b),
        recovery_interval=0.5,
        queue_poll_interval=0.2,
        rollout_poll_interval=0.5,
        busy_timeout=20.0,
    )


def unavailable_on_b(r: httpx.Response) -> bool:
    if r.status_code != 503 or r.headers["content-type"] != "application/problem+json":
        return False
    body = r.json()
    return (body["code"], body.get("server")) == ("database_unavailable", "b")


def success_or_503(responses: list[httpx.Response]) -> None:
    """A request cut short answers 503 database_unavailable (naming b, unless the lost connection was one the
    migration engine holds: it knows no servers)."""
    for r in responses:
        problem = r.headers["content-type"] == "application/problem+json" and r.json()["code"]
        assert r.status_code in SUCCESS or (r.status_code, problem) == (503, "database_unavailable"), (
            r.request.method,
            r.request.url,
            r.text,
        )


async def settled(catalog_url: str, rollouts: list[int], deadline: float) -> dict[str, tuple[str, str]]:
    """Poll until no tenant is in flight and no rollout runs; each tenant's (state, server)."""
    while True:
        conn = await asyncpg.connect(catalog_url)
        try:
            rows = await conn.fetch("SELECT id, state, server FROM tenants")
            running_ = await conn.fetchval(
                "SELECT count(*) FROM rollouts WHERE id = ANY($1::int[]) AND state = 'running'", rollouts
            )
        finally:
            await conn.close()
        states = {r["id"]: (r["state"], r["server"]) for r in rows}
        if not running_ and all(s not in TRANSITIONAL for s, _ in states.values()):
            return states
        assert time.monotonic() < deadline, (states, running_)
        await asyncio.sleep(0.25)


async def nothing_half_made(urls: dict[str, str], prefix: str, states: dict[str, tuple[str, str]]) -> None:
    """Each server holds exactly the databases and roles of its ready (or deleted, kept) tenants."""
    for name, url in urls.items():
        kept = {prefix + t for t, (state, server) in states.items() if server == name and state in ("ready", "deleted")}
        assert await names_on(url, prefix) == (kept, kept), name


async def ready_within(client: httpx.AsyncClient, tenant_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body: dict[str, Any] = (await client.get(f"/tenants/{tenant_id}")).json()
        if body["state"] not in ("queued", "provisioning"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def test_a_server_stopped_mid_operation_fails_only_its_tenants_and_strands_nothing(
    make_settings: MakeSettings, pg_url: str, cluster_b: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    pg_b, url_b = cluster_b
    migrations = with_slow_file(tmp_path)
    settings = outage_settings(make_settings, migrations, pg_url, url_b)
    catalog_url = with_database(pg_url, settings.catalog_database)
    urls = {"a": pg_url, "b": url_b}
    async with running(settings) as client:  # tenants at version 1 on both servers
        for tid, server in [("ma", "a"), ("mb", "b"), ("ra1", "a"), ("ra2", "a"), ("rb1", "b"), ("pad", "a")]:
            assert (await client.post("/tenants", json={"id": tid, "server": server})).status_code == 201
        # The multi-server enqueue path: a queued creation naming no server goes to the least loaded one, b.
        placed = await client.post("/tenants", json={"id": "qp"}, headers=ASYNC)
        assert (placed.status_code, placed.json()["server"]) == (202, "b")
        assert (await ready_within(client, "qp", 30))["state"] == "ready"
        assert f"{settings.db_prefix}qp" in (await names_on(url_b, settings.db_prefix))[0]
    (migrations / "0002_slow.sql").write_text(SLOW_FILE)

    try:
        async with running(settings) as client:
            rollout = await client.post(
                "/rollouts", json={"tenants": ["ra1", "rb1", "ra2"], "canary": 0, "concurrency": 2, "max_failures": 9}
            )
            assert rollout.status_code == 202, rollout.text
            on_a = [("POST", "/tenants", {"json": {"id": f"sa{i}", "server": "a"}}) for i in range(2)]
            on_a += [("POST", "/tenants", {"json": {"id": "qa0", "server": "a"}, "headers": ASYNC})]
            on_a += [("POST", "/tenants/ma/migrate", {})]
            on_b = [("POST", "/tenants", {"json": {"id": f"sb{i}", "server": "b"}}) for i in range(2)]
            on_b += [("POST", "/tenants", {"json": {"id": "qb0", "server": "b"}, "headers": ASYNC})]
            on_b += [("POST", "/tenants/mb/migrate", {}), ("GET", "/tenants/mb/schema", {})]

            attempts: list[Any] = []

            async def catalog_value(query: str) -> Any:
                conn = await asyncpg.connect(catalog_url)
                try:
                    return await conn.fetchval(query)
                finally:
                    await conn.close()

            async def outage() -> list[httpx.Response]:
                """Stop b while the calls above run; what is asked meanwhile; then start it again."""
                await asyncio.sleep(0.3)
                await asyncio.to_thread(pg_b.stop)
                during = [await client.get("/tenants/mb/schema")]
                during.append(await client.post("/tenants", json={"id": "db0", "server": "b"}))
                during.append(await client.post("/tenants", json={"id": "du0"}))  # b has fewer tenants
                during.append(await client.post("/tenants", json={"id": "du1"}, headers=ASYNC))
                during.append(await client.post("/tenants", json={"id": "dq0", "server": "b"}, headers=ASYNC))
                during += [await client.get(p) for p in ("/tenants", "/tenants/ma/schema", "/readyz", "/fleet")]
                await asyncio.sleep(1.0)  # the queued dq0 is looked at by a worker while b is down
                during.append(await client.get("/tenants/dq0"))
                attempts.append(await catalog_value("SELECT attempts FROM create_queue WHERE tenant_id = 'dq0'"))
                await asyncio.to_thread(pg_b.start)
                return during

            calls = on_a + on_b
            found = await asyncio.gather(
                *(client.request(m, p, **kw) for m, p, kw in calls), outage(), return_exceptions=True
            )
            for outcome in found:
                if isinstance(outcome, BaseException):
                    raise outcome
            back = time.monotonic()
            answered: list[httpx.Response] = found[: len(calls)]  # type: ignore[assignment]
            during: list[httpx.Response] = found[-1]  # type: ignore[assignment]

            for r in answered[: len(on_a)]:  # the other server's tenants are served throughout
                assert r.status_code in SUCCESS, (r.request.url, r.text)
            success_or_503(answered[len(on_a) :])
            schema, named_b, unnamed, unnamed_async, queued_b, *others, dq0 = during
            assert unavailable_on_b(schema), schema.text
            assert unavailable_on_b(named_b), named_b.text
            assert (unnamed.status_code, unnamed.json()["server"]) == (201, "a"), unnamed.text
            assert (unnamed_async.status_code, unnamed_async.json()["server"]) == (202, "a"), unnamed_async.text
            assert (queued_b.status_code, queued_b.json()["server"]) == (202, "b"), queued_b.text
            assert [r.status_code for r in others] == [200] * 4, [r.text for r in others]
            assert (dq0.json()["state"], attempts) == ("queued", [0]), dq0.text  # waits for b, no attempt spent

            states = await settled(catalog_url, [rollout.json()["id"]], back + 30)
            acknowledged = {r.json()["id"] for r in [*answered, *during] if r.status_code in (201, 202)}
            assert {t: states[t][0] for t in acknowledged} == dict.fromkeys(acknowledged, "ready")
            assert "db0" not in states  # a refused creation leaves nothing behind
            await nothing_half_made(urls, settings.db_prefix, states)

            # The rollout ran a's tenants; b's failed with the outage or succeeded, and a new one finishes them.
            body = (await client.get(f"/rollouts/{rollout.json()['id']}")).json()
            items = {t["id"]: t for t in body["tenants"]}
            assert (items["ra1"]["state"], items["ra2"]["state"]) == ("succeeded", "succeeded")
            rb1 = items["rb1"]
            assert rb1["state"] == "succeeded" or rb1["error"]["code"] == "database_unavailable", rb1
            again = await client.post("/rollouts", json={"tenants": ["rb1", "mb"], "canary": 0})
            assert again.status_code == 202, again.text
            await settled(catalog_url, [again.json()["id"]], time.monotonic() + 30)
            assert (await client.get(f"/rollouts/{again.json()['id']}")).json()["state"] == "succeeded"
            assert (await client.get("/tenants/mb/schema")).json()["current_version"] == 2
            assert (await client.post("/tenants", json={"id": "after", "server": "b"})).status_code == 201
    finally:
        await asyncio.to_thread(pg_b.start)  # for the module's next test, whatever happened


async def test_a_network_cut_to_one_server_mid_operation(
    make_settings: MakeSettings, pg_url: str, cluster_b: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """The network to b cut (connections reset, new ones refused) while b keeps running: its backends of the
    operations cut short are still there until they notice, and what they half-made is undone once b is reachable."""
    _, url_b = cluster_b
    relay = Relay(url_b)
    await relay.mend()
    migrations = with_slow_file(tmp_path)
    settings = outage_settings(make_settings, migrations, pg_url, relay.url)
    catalog_url = with_database(pg_url, settings.catalog_database)
    try:
        async with running(settings) as client:
            for tid, server in [("ca", "a"), ("cb", "b"), ("pad", "a")]:
                assert (await client.post("/tenants", json={"id": tid, "server": server})).status_code == 201
        (migrations / "0002_slow.sql").write_text(SLOW_FILE)
        async with running(settings) as client:
            on_a = [("POST", "/tenants", {"json": {"id": "na", "server": "a"}}), ("POST", "/tenants/ca/migrate", {})]
            on_b = [("POST", "/tenants", {"json": {"id": f"nb{i}", "server": "b"}}) for i in range(2)]
            on_b += [("POST", "/tenants", {"json": {"id": "qb", "server": "b"}, "headers": ASYNC})]
            on_b += [("POST", "/tenants/cb/migrate", {})]

            async def cut() -> list[httpx.Response]:
                await asyncio.sleep(0.3)
                await relay.cut()
                during = [await client.get("/tenants/cb/schema"), await client.post("/tenants", json={"id": "nu"})]
                during.append(await client.get("/servers"))
                await asyncio.sleep(1.0)
                await relay.mend()
                return during

            calls = on_a + on_b
            found = await asyncio.gather(*(client.request(m, p, **kw) for m, p, kw in calls), cut())
            back = time.monotonic()
            answered: list[httpx.Response] = found[: len(calls)]  # type: ignore[assignment]
            schema, unnamed, servers = found[-1]  # type: ignore[misc]
            for r in answered[: len(on_a)]:
                assert r.status_code in SUCCESS, (r.request.url, r.text)
            success_or_503(answered[len(on_a) :])
            assert unavailable_on_b(schema), schema.text
            assert (unnamed.status_code, unnamed.json()["server"]) == (201, "a"), unnamed.text
            health = {s["name"]: s["healthy"] for s in servers.json()["items"]}
            assert health == {"a": True, "b": False}

            states = await settled(catalog_url, [], back + 30)
            acknowledged = {r.json()["id"] for r in [*answered, unnamed] if r.status_code in (201, 202)}
            assert {t: states[t][0] for t in acknowledged} == dict.fromkeys(acknowledged, "ready")
            await nothing_half_made({"a": pg_url, "b": url_b}, settings.db_prefix, states)
            assert (await client.post("/tenants/cb/migrate")).json()["current_version"] == 2
    finally:
        await relay.cut()


async def test_a_queued_creation_taken_as_its_server_goes_down_is_built_once_it_is_back(
    make_settings: MakeSettings, pg_url: str, cluster_b: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """b stopped unseen (nothing touched it since): the worker takes the queued creation and finds b down. Its
    client holds a 202, so it is not failed: queued again, and built once b answers."""
    pg_b, url_b = cluster_b
    settings = outage_settings(make_settings, with_slow_file(tmp_path), pg_url, url_b)
    try:
        async with running(settings) as client:
            await asyncio.sleep(0.5)  # the first recovery pass looks at every server (templates): before b stops
            await asyncio.to_thread(pg_b.stop)
            accepted = await client.post("/tenants", json={"id": "qd", "server": "b"}, headers=ASYNC)
            assert accepted.status_code == 202, accepted.text
            await asyncio.sleep(1.5)  # the worker took it, b refused; recovery passes meanwhile
            meanwhile = (await client.get("/tenants/qd")).json()
            assert meanwhile["state"] in ("queued", "provisioning"), meanwhile
            await asyncio.to_thread(pg_b.start)
            assert (await ready_within(client, "qd", 30))["state"] == "ready"
            assert f"{settings.db_prefix}qd" in (await names_on(url_b, settings.db_prefix))[0]
    finally:
        await asyncio.to_thread(pg_b.start)
