"""TENANTS_SCHEMA_CACHE_SECONDS: a tenant's level read before is answered from memory and re-read in the background
once that old; whatever the service itself changes is seen at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from service.config import Settings
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]


async def schema(client: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    r = await client.get(f"/tenants/{tenant_id}/schema")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_cached_levels_are_reread_in_the_background_and_changes_show_at_once(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    migrations = migration_dir("ok")
    settings = make_settings(migrations, schema_cache_seconds=0.5)
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201
        assert (await schema(client, "acme"))["status"] == "up_to_date"

        # Behind the service's back: a history row with no file. A read within the cache's age does not see it...
        tenant = await asyncpg.connect(with_database(pg_url, settings.db_prefix + "acme"))
        try:
            await tenant.execute(
                "INSERT INTO _tenants.history (version, name, file, sha256, drizzle_hash, duration_ms)"
                " VALUES (7, 'ghost', '0007_ghost.sql', 'x', 'x', 0)"
            )
        finally:
            await tenant.close()
        assert (await schema(client, "acme"))["status"] == "up_to_date"
        # ...once older, a read still answers at once and starts a re-read, which the next read shows.
        await asyncio.sleep(0.6)
        assert (await schema(client, "acme"))["status"] == "up_to_date"
        for _ in range(100):
            body = await schema(client, "acme")
            if body["status"] == "untracked":
                break
            await asyncio.sleep(0.05)
        assert [u["version"] for u in body["untracked"]] == [7]

    # A change made through the service moves the tenant's stamp in the catalog (seen by every replica), so a
    # cached level is not used, however young.
    settings = make_settings(migrations, schema_cache_seconds=3600)
    async with serve(settings) as client:
        assert (await client.post("/tenants", json={"id": "beta"})).status_code == 201
        assert (await schema(client, "beta"))["current_version"] == 1
        (migrations / "0002_plan.sql").write_text('ALTER TABLE "accounts" ADD COLUMN "plan" text;\n')
    async with serve(settings) as client:
        assert (await schema(client, "beta"))["pending"][0]["version"] == 2
        r = await client.post("/tenants/beta/migrate")
        assert r.status_code == 200, r.text
        body = await schema(client, "beta")
        assert (body["current_version"], body["pending"]) == (2, [])
