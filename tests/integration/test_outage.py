"""A PostgreSQL restart while the service runs: /readyz reports the outage, and the service serves again once the
server is back, without a restart of its own."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from service.config import Settings
from service.store.embedded import EmbeddedPostgres
from tests.conftest import FIXTURES, running
from tests.process import free_port


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tenants-outage-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))  # noqa: S108


async def test_service_survives_a_postgres_restart(make_settings: Callable[..., Settings]) -> None:
    data = scratch_dir()
    port = free_port()
    pg = EmbeddedPostgres(data, port=port, durable=False)
    try:
        url = await asyncio.to_thread(pg.start)
        settings = make_settings(FIXTURES / "ok", database_url=SecretStr(url))
        async with running(settings) as client:
            assert (await client.post("/tenants", json={"id": "before"})).status_code == 201
            await asyncio.to_thread(pg.stop)
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["code"] == "database_unavailable"
            listing = await client.get("/tenants")
            assert listing.status_code == 503
            assert listing.headers["content-type"] == "application/problem+json"
            await asyncio.to_thread(pg.start)
            for _ in range(50):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/tenants/before")).json()["state"] == "ready"
            assert (await client.post("/tenants", json={"id": "after"})).status_code == 201
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)
