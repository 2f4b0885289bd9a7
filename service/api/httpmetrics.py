"""HTTP request metrics on ``/metrics``: a count and a latency histogram per route template, method and status.

prometheus-fastapi-instrumentator measures each request in a middleware and labels it with the route's template
(``/tenants/{tenant_id}``, never the raw path, so ids do not multiply the series; a path no route matches is
``none``). We chose it over starlette-exporter because it writes into a registry of our own per app (tests build
many apps in one process; starlette-exporter keeps its metrics in the process-wide registry), and it can put the
status on the latency histogram too. ``/metrics`` renders this registry after the fleet gauges.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator, metrics

# Seconds; most answers take milliseconds, a creation or a migration seconds.
_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


def install(app: FastAPI) -> None:
    """Measure every request the app answers (call once, before it starts)."""
    registry = CollectorRegistry()
    instrumentator = Instrumentator(should_group_status_codes=False, should_group_untemplated=True, registry=registry)
    instrumentator.add(metrics.requests(registry=registry))
    instrumentator.add(metrics.latency(registry=registry, should_include_status=True, buckets=_BUCKETS))
    instrumentator.instrument(app)
    app.state.http_metrics = registry


def render(app: FastAPI) -> bytes:
    registry: CollectorRegistry = app.state.http_metrics
    return generate_latest(registry)
