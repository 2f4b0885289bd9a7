"""The fleet at a glance, and Prometheus metrics; both answered from the catalog alone."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from service.api import httpmetrics, schemas
from service.api.deps import ProvisionerDep, RolloutsDep
from service.api.problems import responses
from service.fleet.rollouts import DURATION_BUCKETS

router = APIRouter(tags=["fleet"])


@router.get("/fleet", response_model=schemas.FleetOut, responses=responses(503))
async def fleet(provisioner: ProvisionerDep) -> schemas.FleetOut:
    """Tenant counts by version, lifecycle state, status and database server."""
    counts = await provisioner.fleet()
    latest = provisioner.migrations.latest_version
    return schemas.FleetOut(
        latest_version=latest,
        tenants=counts.tenants,
        by_version=counts.by_version,
        by_state=counts.by_state,
        by_status=counts.by_status,
        servers=[
            schemas.FleetServerOut(name=t.name, tenants=counts.by_server.get(t.name, 0), capacity=t.capacity)
            for t in provisioner.servers
        ],
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def metrics(request: Request, provisioner: ProvisionerDep, rollouts: RolloutsDep) -> Response:
    """Prometheus metrics: tenants by version, state, status and server, the latest version on disk, how long
    rollouts took to migrate each tenant, and HTTP requests (count and latency by route, method and status)."""
    counts = await provisioner.fleet()
    latest = provisioner.migrations.latest_version
    registry = CollectorRegistry()
    by_version = Gauge("tenants_by_version", "Tenants per recorded migration version.", ["version"], registry=registry)
    by_state = Gauge("tenants_by_state", "Tenants per lifecycle state.", ["state"], registry=registry)
    by_status = Gauge("tenants_by_status", "Tenants per migration status.", ["status"], registry=registry)
    latest_gauge = Gauge("tenants_latest_version", "Newest migration version on disk.", registry=registry)
    by_server = Gauge("tenants_by_server", "Tenants per database server.", ["server"], registry=registry)
    for version, n in counts.by_version.items():
        by_version.labels(version=version).set(n)
    for state, n in counts.by_state.items():
        by_state.labels(state=state).set(n)
    for status, n in counts.by_status.items():
        by_status.labels(status=status).set(n)
    latest_gauge.set(-1 if latest is None else latest)
    for target in provisioner.servers:
        by_server.labels(server=target.name).set(counts.by_server.get(target.name, 0))
    registry.register(_Fixed(await _rollout_durations(rollouts)))
    body = generate_latest(registry) + httpmetrics.render(request.app)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _rollout_durations(rollouts: RolloutsDep) -> HistogramMetricFamily:
    """From the catalog, so every replica reports the whole fleet's history, and a restart loses nothing."""
    cumulative, count, seconds = await rollouts.duration_buckets()
    buckets = [(str(bound), float(n)) for bound, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
    return HistogramMetricFamily(
        "tenant_rollout_migration_seconds",
        "Time a rollout took to migrate one tenant (succeeded or failed), lock wait included.",
        buckets=[*buckets, ("+Inf", float(count))],
        sum_value=seconds,
    )


class _Fixed(Collector):
    """Metrics computed before the scrape is rendered."""

    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
