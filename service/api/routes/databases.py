"""Databases on the tenant servers, including those made outside the service, and adopting them as tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from service.api import convert, schemas
from service.api.deps import ProvisionerDep, TenantIdPath
from service.api.problems import responses
from service.tenants.adopt import Adopter, AdoptRequest

router = APIRouter(tags=["databases"])


def get_adopter(provisioner: ProvisionerDep) -> Adopter:
    return Adopter(provisioner)


AdopterDep = Annotated[Adopter, Depends(get_adopter)]


@router.get("/databases", response_model=schemas.DatabaseList, responses=responses(422, 503))
async def list_databases(
    adopter: AdopterDep,
    server: Annotated[
        schemas.ServerName | None, Query(description="Only the databases of this server (GET /servers).")
    ] = None,
) -> schemas.DatabaseList:
    """Every database but template0, template1 and postgres, by server: managed (a tenant), unmanaged (named like a
    tenant database or carrying a migration history, unknown to the catalog), other, or internal (the service's
    own).

    An unmanaged database's level is read from its history (ours or drizzle's) or inferred from its schema. A server
    that does not answer makes the whole list 503 (naming it): filter with `?server=` to list the others.
    """
    found = await adopter.discover(server)
    return schemas.DatabaseList(items=[schemas.DatabaseOut.model_validate(d, from_attributes=True) for d in found])


@router.post(
    "/tenants/{tenant_id}/adopt",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.SchemaOut,
    responses={
        200: {"model": schemas.SchemaOut, "description": "Already adopted from this database (replay)."},
        **responses(404, 409, 422, 500, 503),
    },
)
async def adopt_database(
    tenant_id: TenantIdPath, body: schemas.AdoptRequest, adopter: AdopterDep, response: Response
) -> schemas.SchemaOut:
    """Bring an existing database under management as this tenant; it keeps its name, objects and data.

    Its level comes from its history (ours, or drizzle's mapped by hash), else from an exact schema match with
    one version, else from `baseline_version`; otherwise 409 `adoption_ambiguous` names the closest version
    and its differences. History rows are recorded as `baselined`. With `migrate` the pending migrations
    are then applied and a drift check recorded. The service never drops an adopted database: `DELETE`
    only forgets the tenant.
    """
    request = AdoptRequest(tenant_id, body.database, body.migrate, body.baseline_version, body.server)
    found, adopted = await adopter.adopt(request)
    response.headers["Location"] = f"/tenants/{tenant_id}"
    if not adopted:
        response.status_code = status.HTTP_200_OK
    return convert.schema_status(found)
