"""Request ids and structured logs: every log line of a request carries its id, operation steps carry the
tenant, version and duration."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
import uvicorn
from asgi_correlation_id import CorrelationIdFilter

from service.api.app import create_app
from service.config import Settings
from tests.conftest import FIXTURES
from tests.process import ServiceProcess, free_port


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


async def test_an_unhandled_error_is_logged_once_with_its_request_id(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Under uvicorn, as served: one record with the traceback and the request id, and a problem+json 500 (Starlette
    used to re-raise after the handler answered, and uvicorn logged the same error again)."""
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("boom in a route")

    app.add_api_route("/boom", boom)
    caplog.handler.addFilter(CorrelationIdFilter(default_value="-"))
    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), lifespan="off", log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.config.port}") as client:
            r = await client.get("/boom", headers={"X-Request-ID": "req-boom-1"})
            ok = await client.get("/healthz")
    finally:
        server.should_exit = True
        await serving
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (
        500,
        "application/problem+json",
        "internal_error",
    )
    assert r.headers["x-request-id"] == "req-boom-1"
    assert "boom in a route" not in r.text  # no traceback or message reaches the client
    assert ok.status_code == 200  # the server goes on
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1, [(rec.name, rec.getMessage()) for rec in errors]
    (record,) = errors
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "boom in a route"
    assert getattr(record, "correlation_id", None) == "req-boom-1"
    assert "GET /boom" in record.getMessage()
