"""Request ids and structured logs: every log line of a request carries its id, operation steps carry the
tenant, version and duration."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.config import Settings
from tests.conftest import FIXTURES
from tests.process import ServiceProcess


async def test_request_id_is_honoured_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "build-42.step_7"})
    assert given.headers["x-request-id"] == "build-42.step_7"
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert len(generated) >= 16
    hostile = await client.get("/healthz", headers={"X-Request-ID": 'x" injected=1'})
    assert hostile.headers["x-request-id"] not in ('x" injected=1', "")


async def test_json_log_lines_carry_request_tenant_version_duration(
    settings: Settings, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    env = {
        "TENANTS_DATABASE_URL": pg_url,
        "TENANTS_CATALOG_DATABASE": settings.catalog_database,
        "TENANTS_DB_PREFIX": settings.db_prefix,
        "TENANTS_MIGRATIONS_DIR": str(FIXTURES / "ok"),
    }
    service = ServiceProcess(env, log).start()
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            r = await client.post("/tenants", json={"id": "lg"}, headers={"X-Request-ID": "req-lg-1"})
            assert r.status_code == 201
    finally:
        assert service.stop() == 0
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    mine = [e for e in events if e.get("request_id") == "req-lg-1"]
    applied = [e for e in mine if e["message"] == "migration applied"]
    assert [(e["version"], e["tenant"]) for e in applied] == [(0, "lg"), (1, "lg")]
    assert all(e["duration_ms"] >= 0 for e in applied)
    ready = [e for e in mine if e["message"] == "tenant ready"]
    assert [(e["version"], e["tenant"]) for e in ready] == [(1, "lg")]
    access = [e for e in mine if e["logger"] == "uvicorn.access"]
    assert access, "the access log line of the request carries its id too"
