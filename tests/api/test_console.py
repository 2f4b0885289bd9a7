"""The console's pages without a browser: the tenant list's search, filters, sorting and pages against real catalog
rows, the catalog's drifted status, and the session cookie (tests/browser drives the pages in Chromium)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg
import httpx

from service.config import Settings
from service.store.db import with_database
from tests.conftest import FIXTURES

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
ADMIN = "admin-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


def _ids(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return re.findall(r'<tr data-tenant="([a-z0-9_]+)">', page.text)


async def _fake_rows(pg_url: str, settings: Settings) -> None:
    """120 catalog rows (no databases: the list reads the catalog only) on versions 0 and 1, one failed; drift
    checks: d001 drifted (newest check unclean), d002 drifted once and clean since."""
    conn = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
    try:
        await conn.execute(
            """INSERT INTO tenants (id, name, database, state, request_sha256, version, error, updated_at)
               SELECT 'd' || lpad(g::text, 3, '0'), 'n', 'fake_d' || g, CASE WHEN g = 7 THEN 'failed' ELSE 'ready' END,
                      '', g % 2, CASE WHEN g = 7 THEN '{"code": "migration_failed", "message": "x"}'::jsonb END,
                      now() - make_interval(mins => g)
               FROM generate_series(1, 120) g"""
        )
        for tenant, clean in (("d001", True), ("d001", False), ("d002", False), ("d002", True)):
            await conn.execute(
                "INSERT INTO drift_checks (tenant_id, version, clean, differences) VALUES ($1, 1, $2, '[]')",
                tenant,
                clean,
            )
    finally:
        await conn.close()


async def test_tenant_list_filters_sorts_and_pages_from_the_catalog(
    pg_url: str, make_settings: Callable[..., Settings], serve: Serve
) -> None:
    settings = make_settings(FIXTURES / "ok", fleet_cache_seconds=0)
    async with serve(settings) as client:
        await _fake_rows(pg_url, settings)
        first = await client.get("/ui/tenants")
        assert _ids(first) == [f"d{i:03}" for i in range(1, 51)]
        assert "120 tenants match; page 1 of 3." in first.text
        assert _ids(await client.get("/ui/tenants?page=3")) == [f"d{i:03}" for i in range(101, 121)]
        past = await client.get("/ui/tenants?page=9")
        assert _ids(past) == []
        assert "120 tenants match" in past.text
        assert _ids(await client.get("/ui/tenants?q=d11")) == [f"d{i}" for i in range(110, 120)]
        assert _ids(await client.get("/ui/tenants?status=drifted")) == ["d001"]
        assert _ids(await client.get("/ui/tenants?status=failed")) == ["d007"]
        behind = await client.get("/ui/tenants?status=behind&version=0&page=2")
        assert _ids(behind) == [f"d{i:03}" for i in range(102, 121, 2)]
        assert "60 tenants match; page 2 of 2." in behind.text
        assert _ids(await client.get("/ui/tenants?state=failed&server=default")) == ["d007"]
        newest = _ids(await client.get("/ui/tenants?sort=updated&order=desc"))
        assert newest[:3] == ["d001", "d002", "d003"]
        by_version = _ids(await client.get("/ui/tenants?sort=version&order=desc&q=d00"))
        assert by_version == ["d001", "d003", "d005", "d007", "d009", "d002", "d004", "d006", "d008"]
        for bad in ("state=asleep", "status=modified", "server=nowhere", "version=x", "sort=name", "order=up"):
            refused = await client.get(f"/ui/tenants?{bad}")
            assert refused.status_code == 422, bad
            assert refused.json()["code"] == "invalid_request"

        fleet = (await client.get("/fleet")).json()
        assert fleet["by_status"] == {"failed": 1, "drifted": 1, "behind": 60, "up_to_date": 58}
        overview = await client.get("/ui")
        assert overview.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        assert overview.headers["cache-control"] == "no-store"
        assert re.search(r'data-status="drifted">.*?data-count>1<', overview.text, flags=re.DOTALL)
        assert "/ui/ui" not in overview.text
        static = await client.get("/ui/static/console.js")
        assert static.status_code == 200
        assert "sessionStorage" in static.text
        assert "/ui" not in (await client.get("/openapi.json")).json()["paths"]


async def test_session_cookie_opens_pages_for_its_role_only(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(make_settings(FIXTURES / "ok", admin_token=ADMIN, read_token=READ)) as client:
        login = await client.get("/ui/login?next=//elsewhere.example/ui")
        assert 'data-next="/ui"' in login.text  # never a redirect off the console
        assert (await client.get("/ui/rollouts")).headers["location"] == "/ui/login?next=/ui/rollouts"
        opened = await client.post("/ui/session", headers={"Authorization": f"Bearer {READ}"})
        assert opened.status_code == 204
        cookie = opened.headers["set-cookie"]
        for attribute in ("HttpOnly", "Path=/ui", "SameSite=strict"):
            assert attribute in cookie
        value = cookie.split(";")[0].split("=", 1)[1]
        assert READ not in value
        role, expires, mac = value.split(".")
        assert role == "read"
        assert int(expires) > time.time()

        async def page(cookie_value: str) -> int:
            client.cookies.clear()
            return (await client.get("/ui/tenants", headers={"Cookie": f"tenants_console={cookie_value}"})).status_code

        assert await page(value) == 200
        assert await page(f"admin.{expires}.{mac}") == 303  # the role is signed
        assert await page(f"read.{int(expires) + 1}.{mac}") == 303  # so is the expiry
        assert await page(f"read.{int(time.time()) - 1}.{mac}") == 303
        assert (await client.post("/ui/session", headers={"Authorization": f"Bearer {ADMIN}x"})).status_code == 401
        closed = await client.delete("/ui/session")
        assert closed.status_code == 204
        assert 'tenants_console=""' in closed.headers["set-cookie"] or "Max-Age=0" in closed.headers["set-cookie"]
