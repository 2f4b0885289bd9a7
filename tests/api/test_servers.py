"""Several database servers over HTTP: placement answers, GET /servers, /fleet, /databases, and one server down.

Server ``a`` is the session cluster (which also holds the catalog), ``b`` a second cluster started by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from service.config import Settings
from tests.conftest import FIXTURES, running
from tests.servers_support import second_cluster, two_servers

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="module")
def url_b() -> Iterator[str]:
    with second_cluster() as (_, url):
        yield url


async def create(client: httpx.AsyncClient, tenant_id: str, **body: Any) -> httpx.Response:
    return await client.post("/tenants", json={"id": tenant_id, **body})


async def test_one_server_by_default(make_settings: MakeSettings) -> None:
    async with running(make_settings(FIXTURES / "ok")) as client:
        made = await create(client, "solo", server="default")
        assert made.status_code == 201, made.text
        assert made.json()["server"] == "default"
        listed = (await client.get("/servers")).json()["items"]
        assert len(listed) == 1
        assert listed[0]["version"]
        assert {k: v for k, v in listed[0].items() if k != "version"} == {
            "name": "default",
            "capacity": None,
            "tenants": 1,
            "healthy": True,
            "error": None,
            "draining": False,
        }
        unknown = await create(client, "other", server="elsewhere")
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_server")
        assert unknown.json()["servers"] == ["default"]
        malformed = await create(client, "other", server="Not A Name")
        assert (malformed.status_code, malformed.json()["code"]) == (422, "invalid_request")
        assert (await client.get("/tenants/other")).status_code == 404
        databases = await client.get("/databases", params={"server": "elsewhere"})
        assert (databases.status_code, databases.json()["code"]) == (422, "unknown_server")


async def test_placement_answers_and_fleet_by_server(make_settings: MakeSettings, pg_url: str, url_b: str) -> None:
    settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b, 1, 2))
    async with running(settings) as client:
        assert [(await create(client, t)).json()["server"] for t in ("p1", "p2", "p3")] == ["a", "b", "b"]
        full = await create(client, "p4", server="a")
        assert (full.status_code, full.json()["code"]) == (409, "server_full")
        assert (full.json()["server"], full.json()["capacity"], full.json()["tenants"]) == ("a", 1, 1)
        none = await create(client, "p4")
        assert (none.status_code, none.json()["code"]) == (409, "no_capacity")
        assert (await client.get("/tenants/p4")).status_code == 404

        fleet = (await client.get("/fleet")).json()
        assert fleet["servers"] == [
            {"name": "a", "tenants": 1, "capacity": 1},
            {"name": "b", "tenants": 2, "capacity": 2},
        ]
        assert 'tenants_by_server{server="b"} 2.0' in (await client.get("/metrics")).text
        assert [(s["name"], s["tenants"], s["healthy"]) for s in (await client.get("/servers")).json()["items"]] == [
            ("a", 1, True),
            ("b", 2, True),
        ]
        on_b = (await client.get("/databases", params={"server": "b"})).json()["items"]
        assert {(d["name"], d["kind"], d["tenant"], d["server"]) for d in on_b} == {
            (f"{settings.db_prefix}p2", "managed", "p2", "b"),
            (f"{settings.db_prefix}p3", "managed", "p3", "b"),
        }
        everywhere = (await client.get("/databases")).json()["items"]
        assert (f"{settings.db_prefix}p1", "a") in {(d["name"], d["server"]) for d in everywhere}
        assert (await client.get("/tenants/p1")).json()["server"] == "a"


async def test_a_server_down_makes_only_its_tenants_unavailable(make_settings: MakeSettings, pg_url: str) -> None:
    with second_cluster() as (pg_b, url_b):
        settings = make_settings(FIXTURES / "ok", servers=two_servers(pg_url, url_b))
        async with running(settings) as client:
            assert (await create(client, "near", server="a")).status_code == 201
            assert (await create(client, "far", server="b")).status_code == 201
            assert (await client.get("/tenants/far/schema")).status_code == 200  # a kept connection to b

            await asyncio.to_thread(pg_b.stop)
            for method, path in [
                ("GET", "/tenants/far/schema"),
                ("GET", "/tenants/far/drift"),
                ("POST", "/tenants/far/migrate"),
                ("POST", "/tenants/far/credentials/rotate"),
                ("GET", "/databases"),
            ]:
                down = await client.request(method, path)
                assert down.status_code == 503, (path, down.text)
                assert (down.json()["code"], down.json()["server"]) == ("database_unavailable", "b"), path
            refused = await create(client, "late", server="b")
            assert (refused.status_code, refused.json()["server"]) == (503, "b")
            assert (await client.get("/tenants/late")).status_code == 404  # nothing left behind

            assert (await client.get("/tenants/near/schema")).status_code == 200
            assert (await client.post("/tenants/near/migrate")).status_code == 200
            assert (await create(client, "meanwhile")).json()["server"] == "a"  # placement itself still works
            assert [t["id"] for t in (await client.get("/tenants")).json()["items"]] == ["far", "meanwhile", "near"]
            assert (await client.get("/fleet")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/databases", params={"server": "a"})).status_code == 200
            states = {s["name"]: s for s in (await client.get("/servers")).json()["items"]}
            assert (states["a"]["healthy"], states["b"]["healthy"]) == (True, False)
            assert states["b"]["version"] is None
            assert states["b"]["error"]

            await asyncio.to_thread(pg_b.start)
            for _ in range(50):
                states = {s["name"]: s for s in (await client.get("/servers")).json()["items"]}
                if states["b"]["healthy"]:
                    break
                await asyncio.sleep(0.1)
            assert states["b"]["healthy"], states["b"]
            assert (await client.get("/tenants/far/schema")).status_code == 200
            assert (await client.get("/tenants/far/drift")).json()["clean"] is True
            assert (await client.post("/tenants/far/migrate")).status_code == 200
            assert (await client.delete("/tenants/far", params={"confirm": "far"})).status_code == 204
