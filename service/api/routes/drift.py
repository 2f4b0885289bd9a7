"""Schema drift: one tenant against its expected schema, the fleet sweep, and the expected schema of a version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.api import convert, schemas
from service.api.deps import ProvisionerDep, TenantIdPath
from service.api.problems import responses

router = APIRouter(tags=["drift"])


@router.get(
    "/tenants/{tenant_id}/drift", response_model=schemas.DriftReportOut, responses=responses(404, 409, 422, 500, 503)
)
async def tenant_drift(tenant_id: TenantIdPath, provisioner: ProvisionerDep) -> schemas.DriftReportOut:
    """Compare the tenant's live catalog with the expected schema at its recorded level; the check is recorded.

    Differences are sorted by name and stable; a missing or unexpected table is one difference.
    """
    return convert.drift_report(await provisioner.drift.check(tenant_id))


@router.post("/drift-checks", response_model=schemas.SweepOut, responses=responses(500, 503))
async def sweep(provisioner: ProvisionerDep) -> schemas.SweepOut:
    """Check every ready tenant (a few at a time) and record each result; busy tenants are skipped."""
    result = await provisioner.drift.sweep(provisioner.settings.drift_concurrency)
    return schemas.SweepOut(checked=result.checked, drifted=list(result.drifted), skipped=list(result.skipped))


@router.get(
    "/migrations/{version}/schema",
    response_model=schemas.ExpectedSchemaOut,
    tags=["migrations"],
    responses=responses(404, 422, 500, 503),
)
async def expected_schema(
    version: Annotated[int, Path(ge=0, le=999_999, description="Migration version.")], provisioner: ProvisionerDep
) -> schemas.ExpectedSchemaOut:
    """The schema a database at this version must have: what replaying 0000..version gives (built once, cached).

    An application's CI can compare its ORM model with it. Schemas `_tenants` and `drizzle` are left out.
    """
    found = await provisioner.drift.expected_schema(version)
    file = provisioner.migrations.by_version[version].file
    return schemas.ExpectedSchemaOut(version=version, file=file, objects=found.objects())
