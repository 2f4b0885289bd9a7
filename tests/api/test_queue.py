"""The creation queue (Prefer: respond-async): the 202 is a catalog row and a queue entry, the queue shows positions
and survives the process that filled it, and another process builds what it queued with the 202's password."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg
import httpx

from service.config import Settings
from tests.conftest import FIXTURES

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]

ASYNC = {"Prefer": "respond-async"}


async def test_queue_survives_the_process_and_another_one_builds_it(
    make_settings: MakeSettings, serve: Serve, pg_url: str
) -> None:
    only_queues = make_settings(FIXTURES / "ok", queue_workers=0)
    urls = {}
    async with serve(only_queues) as client:
        for tenant_id in ("q1", "q2", "q3"):
            r = await client.post("/tenants", json={"id": tenant_id}, headers=ASYNC)
            assert r.status_code == 202, r.text
            assert (r.json()["state"], r.headers["preference-applied"]) == ("queued", "respond-async")
            urls[tenant_id] = r.json()["connection_url"]
        positions = [(await client.get(f"/tenants/{t}")).json()["queue_position"] for t in ("q1", "q2", "q3")]
        assert positions == [1, 2, 3]
        replay = await client.post("/tenants", json={"id": "q2"}, headers=ASYNC)
        assert (replay.status_code, replay.json()["state"]) == (200, "queued")
        assert "connection_url" not in replay.json()
        other = await client.post("/tenants", json={"id": "q2", "name": "else"}, headers=ASYNC)
        assert (other.status_code, other.json()["code"]) == (409, "tenant_exists")
        # Nothing was made on the tenant server yet: no role, no database.
        conn = await asyncpg.connect(pg_url)
        try:
            made = await conn.fetchval(
                "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $1)", only_queues.db_prefix
            )
        finally:
            await conn.close()
        assert made == 0

    async with serve(make_settings(FIXTURES / "ok")) as client:  # another process, with workers
        for tenant_id in ("q1", "q2", "q3"):
            for _ in range(1200):
                tenant = (await client.get(f"/tenants/{tenant_id}")).json()
                if tenant["state"] != "queued" and tenant["state"] != "provisioning":
                    break
                await asyncio.sleep(0.05)
            assert (tenant["state"], tenant["queue_position"]) == ("ready", None), tenant
        events = (await client.get("/tenants/q1/events")).json()["items"]
        assert [(e["kind"], e["state"], e["detail"]["queued"]) for e in events] == [("create", "succeeded", True)]
    for tenant_id, url in urls.items():  # the password answered by the first process works
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM accounts") == 1, tenant_id
        finally:
            await conn.close()
