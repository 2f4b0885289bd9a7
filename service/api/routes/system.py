"""Health, readiness and the loaded migration set."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import convert, schemas
from service.api.deps import ProvisionerDep
from service.api.problems import responses

router = APIRouter()  # open: probes must work without a token
protected = APIRouter()


@router.get("/healthz", response_model=schemas.HealthOut, response_model_exclude_none=True, tags=["health"])
async def healthz() -> schemas.HealthOut:
    """The process is up."""
    return schemas.HealthOut(status="ok")


@router.get("/readyz", response_model=schemas.HealthOut, tags=["health"], responses=responses(503))
async def readyz(provisioner: ProvisionerDep) -> schemas.HealthOut:
    """The catalog answers, the migration set is valid (the service does not start otherwise), and no server's
    connection budget is spent with requests waiting (503 ``database_unavailable`` with ``connections`` then).
    ``connections`` reports each server's budget."""
    pressure = await provisioner.ping()
    return schemas.HealthOut(status="ready", connections=[convert.pressure(p) for p in pressure])


@protected.get("/migrations", response_model=schemas.MigrationsOut, tags=["migrations"])
async def list_migrations(provisioner: ProvisionerDep) -> schemas.MigrationsOut:
    """The migration set loaded from disk."""
    return convert.migration_set(provisioner.migrations)
