"""Kill the service (SIGKILL) in the middle of a template build, restart it: the half-built template is dropped at
start, never used, and the next clone builds a finished one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from service.schema.template import template_prefix
from tests.conftest import FIXTURES
from tests.integration.test_crash import request, request_until_killed, tenant_databases
from tests.process import ServiceProcess


async def template_databases(pg_url: str, catalog: str) -> list[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", template_prefix(catalog)
        )
        return [r["datname"] for r in rows]
    finally:
        await conn.close()


async def test_kill_during_template_build(pg_url: str, tag: str, cleanup: None, tmp_path: Path) -> None:
    env = {
        "TENANTS_DATABASE_URL": pg_url,
        "TENANTS_CATALOG_DATABASE": f"cat_{tag}",
        "TENANTS_DB_PREFIX": f"t{tag}_",
        "TENANTS_MIGRATIONS_DIR": str(FIXTURES / "ok"),
        "TENANTS_LOG_LEVEL": "warning",
        "TENANTS_STRATEGY": "clone",
    }
    dying = ServiceProcess({**env, "TENANTS_FAILPOINT": "template.before_finish"}, tmp_path / "log").start()
    await request_until_killed(dying, "POST", "/tenants", json={"id": "k1"})
    left = await template_databases(pg_url, f"cat_{tag}")
    assert len(left) == 1  # the checked build, not yet finished under its name
    assert left[0].rsplit("_", 1)[0] + "_" != template_prefix(f"cat_{tag}")

    service = ServiceProcess(env, tmp_path / "log").start()
    try:
        for _ in range(300):  # dropped by the first recovery pass, which runs in the background from the start
            if not await template_databases(pg_url, f"cat_{tag}"):
                break
            await asyncio.sleep(0.1)
        assert await template_databases(pg_url, f"cat_{tag}") == []
        for _ in range(300):
            tenant = (await request("GET", f"{service.url}/tenants/k1")).json()
            if tenant["state"] != "provisioning":
                break
            await asyncio.sleep(0.1)
        assert tenant["state"] == "failed"
        assert tenant["error"]["code"] == "interrupted"
        retry = await request("POST", f"{service.url}/tenants", json={"id": "k1"})
        assert retry.status_code == 201, retry.text
        schema = (await request("GET", f"{service.url}/tenants/k1/schema")).json()
        assert schema["status"] == "up_to_date"
        assert {a["how"] for a in schema["applied"]} == {"cloned"}
        (name,) = await template_databases(pg_url, f"cat_{tag}")
        assert name == left[0].rsplit("_", 1)[0]
        assert await tenant_databases(pg_url, tag) == [f"t{tag}_k1"]
    finally:
        service.stop()
