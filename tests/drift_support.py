"""Helpers shared by the drift and adoption tests: an app whose domain objects a test can reach, and requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from service.api.app import create_app
from service.config import Settings
from service.store.db import with_database
from service.tenants.provisioner import Provisioner

DRIFT = Path(__file__).resolve().parent / "fixtures" / "migrations" / "drift"


async def execute(pg_url: str, database: str, sql: str) -> None:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create(client: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    r = await client.post("/tenants", json={"id": tenant_id})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def drift_of(client: httpx.AsyncClient, tenant_id: str) -> dict[str, Any]:
    r = await client.get(f"/tenants/{tenant_id}/drift")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@asynccontextmanager
async def app_running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Like conftest's ``running``, but also yields the app (its provisioner holds the expected-schema cache)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            yield app, client


def provisioner_of(app: FastAPI) -> Provisioner:
    found: Provisioner = app.state.provisioner
    return found
