"""GET /fleet and /metrics answer from the catalog."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx

from service.config import Settings
from tests.conftest import FIXTURES


async def test_fleet_and_metrics_count_tenants(
    make_settings: Callable[..., Settings],
    serve: Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    async with serve(make_settings(FIXTURES / "ok")) as client:
        for tid in ("f1", "f2", "f3"):
            assert (await client.post("/tenants", json={"id": tid})).status_code == 201
        fleet = (await client.get("/fleet")).json()
        assert fleet == {
            "latest_version": 1,
            "tenants": 3,
            "by_version": {"1": 3},
            "by_state": {"ready": 3},
            "by_status": {"failed": 0, "drifted": 0, "behind": 0, "up_to_date": 3},
            "servers": [{"name": "default", "tenants": 3, "capacity": None}],
        }
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'tenants_by_version{version="1"} 3.0' in metrics.text
        assert 'tenants_by_status{status="up_to_date"} 3.0' in metrics.text
        assert "tenants_latest_version 1.0" in metrics.text
        # HTTP requests by route template, method and status: ids never become labels.
        assert (await client.get("/tenants/nobody")).status_code == 404
        assert (await client.put("/tenants/f1")).status_code == 405
        text = (await client.get("/metrics")).text
        assert 'http_requests_total{handler="/tenants",method="POST",status="201"} 3.0' in text
        assert 'http_requests_total{handler="/tenants/{tenant_id}",method="GET",status="404"} 1.0' in text
        assert 'http_requests_total{handler="/tenants/{tenant_id}",method="PUT",status="405"} 1.0' in text
        latency = 'http_request_duration_seconds_count{handler="/tenants",method="POST",status="201"} 3.0'
        assert latency in text
        assert '"/tenants/f1"' not in text
