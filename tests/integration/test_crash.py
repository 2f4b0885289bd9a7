"""Kill the service (SIGKILL) at each step of create, migrate and delete, restart it, and find the catalog and the
server in agreement: no orphan database, no half-migrated tenant, every tenant ready or failed, a retry succeeds.

Steps that have no natural pause are reached with the test-only ``TENANTS_FAILPOINT`` setting (the process kills
itself there); a step inside the chain is reached with a migration that sleeps while the test kills the process.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.store.db import with_database
from tests.conftest import FIXTURES
from tests.process import ServiceProcess

KILL_POINTS_CREATE = ["create.after_owned", "create.after_database", "create.before_ready"]
KILL_POINTS_DELETE = ["delete.after_mark", "delete.after_drop"]


@pytest.fixture
def env(pg_url: str, tag: str, cleanup: None) -> Callable[..., dict[str, str]]:
    def make(migrations: Path, **extra: str) -> dict[str, str]:
        return {
            "TENANTS_DATABASE_URL": pg_url,
            "TENANTS_CATALOG_DATABASE": f"cat_{tag}",
            "TENANTS_DB_PREFIX": f"t{tag}_",
            "TENANTS_MIGRATIONS_DIR": str(migrations),
            "TENANTS_LOG_LEVEL": "warning",
            **extra,
        }

    return make


async def tenant_databases(pg_url: str, tag: str) -> list[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", f"t{tag}\\_%")
        return [r["datname"] for r in rows]
    finally:
        await conn.close()


async def operations(pg_url: str, tag: str, tenant_id: str) -> list[tuple[str, str, str | None, bool]]:
    """The tenant's audit trail, oldest first: (kind, state, error code, closed by recovery)."""
    conn = await asyncpg.connect(with_database(pg_url, f"cat_{tag}"))
    try:
        rows = await conn.fetch(
            """SELECT kind, state, error->>'code' AS code, coalesce((detail->>'recovered')::boolean, false) AS rec
               FROM operations WHERE tenant_id = $1 ORDER BY id""",
            tenant_id,
        )
        return [(r["kind"], r["state"], r["code"], r["rec"]) for r in rows]
    finally:
        await conn.close()


async def request(method: str, url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]


async def request_until_killed(proc: ServiceProcess, method: str, path: str, **kwargs: object) -> None:
    """The request dies with the process: the client sees a dropped connection, never an answer."""
    with pytest.raises(httpx.HTTPError):
        await request(method, proc.url + path, **kwargs)
    assert await asyncio.to_thread(proc.wait_dead) != 0


async def settled(url: str, tenant_id: str) -> dict[str, Any]:
    """The tenant once recovery (in the background from the start) has finished or undone what was in flight."""
    for _ in range(300):
        tenant: dict[str, Any] = (await request("GET", f"{url}/tenants/{tenant_id}")).json()
        if tenant.get("state") not in ("queued", "provisioning", "deleting", "restoring", "moving"):
            break
        await asyncio.sleep(0.1)
    return tenant


@pytest.mark.parametrize("point", KILL_POINTS_CREATE)
async def test_kill_during_create(
    point: str, env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    migrations = FIXTURES / "ok"
    dying = ServiceProcess(env(migrations, TENANTS_FAILPOINT=point), tmp_path / "log").start()
    await request_until_killed(dying, "POST", "/tenants", json={"id": "k1"})
    service = ServiceProcess(env(migrations), tmp_path / "log").start()
    try:
        tenant = await settled(service.url, "k1")
        assert tenant["state"] == "failed"
        assert tenant["error"]["code"] == "interrupted"
        assert await tenant_databases(pg_url, tag) == []
        # The audit trail says so too: the creation is closed, failed, by recovery.
        assert await operations(pg_url, tag, "k1") == [("create", "failed", "interrupted", True)]
        retry = await request("POST", f"{service.url}/tenants", json={"id": "k1"})
        assert retry.status_code == 201, retry.text
        assert (await request("GET", f"{service.url}/tenants/k1/schema")).json()["status"] == "up_to_date"
        assert await tenant_databases(pg_url, tag) == [f"t{tag}_k1"]
    finally:
        service.stop()


def sleepy_set(tmp_path: Path, seconds: float) -> Path:
    """0000-0001 as in `ok`, 0002 commits (adds an enum value), 0003 sleeps: a kill there is mid-chain."""
    target = tmp_path / "sleepy"
    shutil.copytree(FIXTURES / "ok", target)
    (target / "0002_kinds.sql").write_text(
        "CREATE TYPE \"kind\" AS ENUM ('a');\n--> statement-breakpoint\nALTER TYPE \"kind\" ADD VALUE 'b';\n"
    )
    (target / "0003_slow.sql").write_text(
        f'SELECT pg_sleep({seconds});\n--> statement-breakpoint\nALTER TABLE "accounts" ADD COLUMN "slow" text;\n'
    )
    return target


def kill_when_sleeping(proc: ServiceProcess, pg_url: str, after: float) -> None:
    def killer() -> None:
        time.sleep(after)
        proc.kill()

    threading.Thread(target=killer, daemon=True).start()


async def test_kill_mid_chain_during_create(
    env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    migrations = sleepy_set(tmp_path, 3)
    dying = ServiceProcess(env(migrations), tmp_path / "log").start()
    kill_when_sleeping(dying, pg_url, 1.5)
    await request_until_killed(dying, "POST", "/tenants", json={"id": "mid"})
    service = ServiceProcess(env(migrations), tmp_path / "log").start()
    try:
        assert (await settled(service.url, "mid"))["state"] == "failed"
        assert await tenant_databases(pg_url, tag) == []
        retry = await request("POST", f"{service.url}/tenants", json={"id": "mid"})
        assert retry.status_code == 201
    finally:
        service.stop()


async def test_kill_mid_chain_during_migrate(
    env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "grow"
    shutil.copytree(FIXTURES / "ok", migrations)
    first = ServiceProcess(env(migrations), tmp_path / "log").start()
    assert (await request("POST", f"{first.url}/tenants", json={"id": "mig"})).status_code == 201
    assert first.stop() == 0
    sleepy = sleepy_set(tmp_path, 3)
    dying = ServiceProcess(env(sleepy), tmp_path / "log").start()
    kill_when_sleeping(dying, pg_url, 1.5)
    await request_until_killed(dying, "POST", "/tenants/mig/migrate")
    service = ServiceProcess(env(sleepy), tmp_path / "log").start()
    try:
        tenant = (await request("GET", f"{service.url}/tenants/mig")).json()
        assert tenant["state"] == "ready"
        schema = (await request("GET", f"{service.url}/tenants/mig/schema")).json()
        # 0002 committed on its own (enum value); 0003 died with its transaction: nothing half-applied.
        assert schema["current_version"] == 2
        assert [p["version"] for p in schema["pending"]] == [3]
        assert (await operations(pg_url, tag, "mig"))[-1] == ("migrate", "failed", "interrupted", True)
        done = await request("POST", f"{service.url}/tenants/mig/migrate")
        assert done.status_code == 200
        assert done.json()["status"] == "up_to_date"
    finally:
        service.stop()


@pytest.mark.parametrize("point", KILL_POINTS_DELETE)
async def test_kill_during_delete(
    point: str, env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    migrations = FIXTURES / "ok"
    first = ServiceProcess(env(migrations), tmp_path / "log").start()
    assert (await request("POST", f"{first.url}/tenants", json={"id": "del"})).status_code == 201
    assert first.stop() == 0
    dying = ServiceProcess(env(migrations, TENANTS_FAILPOINT=point), tmp_path / "log").start()
    await request_until_killed(dying, "DELETE", "/tenants/del", params={"confirm": "del", "purge": "true"})
    service = ServiceProcess(env(migrations), tmp_path / "log").start()
    try:
        assert (await settled(service.url, "del")).get("code") == "tenant_not_found"
        assert await tenant_databases(pg_url, tag) == []
        # Recovery finished the delete, and closed its operation as the success it is.
        assert (await operations(pg_url, tag, "del"))[-1] == ("delete", "succeeded", None, True)
        again = await request("POST", f"{service.url}/tenants", json={"id": "del"})
        assert again.status_code == 201
    finally:
        service.stop()


MIXED_SLOW = """ALTER TABLE "accounts" ADD COLUMN "slug" text;--> statement-breakpoint
UPDATE "accounts" SET "slug" = 'x' || "id";--> statement-breakpoint
COMMIT;--> statement-breakpoint
CREATE INDEX CONCURRENTLY "accounts_slug_idx" ON "accounts" ("slug");--> statement-breakpoint
SELECT pg_sleep(3);--> statement-breakpoint
CREATE INDEX CONCURRENTLY "accounts_name_slug_idx" ON "accounts" ("name", "slug");--> statement-breakpoint
BEGIN;--> statement-breakpoint
ALTER TABLE "accounts" ALTER COLUMN "slug" SET NOT NULL;
"""


async def kill_at_progress(proc: ServiceProcess, url: str, statement: int) -> None:
    """SIGKILL the service as soon as the tenant's progress row says ``statement`` has committed."""
    deadline = time.monotonic() + 60
    conn = await asyncpg.connect(url)
    try:
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT to_regclass('_tenants.progress') IS NOT NULL"):
                done = await conn.fetchval("SELECT statement FROM _tenants.progress")
                if done == statement:
                    proc.kill()
                    return
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError(f"statement {statement} never committed")


async def test_kill_in_the_non_transactional_part_of_a_mixed_file(
    env: Callable[..., dict[str, str]], pg_url: str, tag: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "mixed"
    shutil.copytree(FIXTURES / "ok", migrations)
    first = ServiceProcess(env(migrations), tmp_path / "log").start()
    assert (await request("POST", f"{first.url}/tenants", json={"id": "mix"})).status_code == 201
    assert first.stop() == 0
    (migrations / "0002_slugs.sql").write_text(MIXED_SLOW)
    tenant_url = with_database(pg_url, f"t{tag}_mix")
    dying = ServiceProcess(env(migrations), tmp_path / "log").start()
    await asyncio.gather(
        request_until_killed(dying, "POST", "/tenants/mix/migrate"), kill_at_progress(dying, tenant_url, 4)
    )
    service = ServiceProcess(env(migrations), tmp_path / "log").start()
    try:
        schema = (await request("GET", f"{service.url}/tenants/mix/schema")).json()
        # the first part and the first index committed; the tenant says which file and part, and is not complete
        assert (schema["status"], schema["current_version"]) == ("failed", 1)
        error = schema["error"]
        assert (error["code"], error["file"], error["part"], error["parts"], error["statement"]) == (
            "partially_applied",
            "0002_slugs.sql",
            2,
            3,
            4,
        )
        done = await request("POST", f"{service.url}/tenants/mix/migrate")
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["current_version"]) == ("up_to_date", 2)
        conn = await asyncpg.connect(tenant_url)
        try:
            indexes = await conn.fetch(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname LIKE 'accounts_%slug_idx' ORDER BY 1"
            )
            assert [tuple(r) for r in indexes] == [("accounts_name_slug_idx", True), ("accounts_slug_idx", True)]
            assert await conn.fetchval("SELECT count(*) FROM _tenants.progress") == 0
            assert await conn.fetchval("SELECT count(*) FROM _tenants.history WHERE version = 2") == 1
        finally:
            await conn.close()
    finally:
        service.stop()
