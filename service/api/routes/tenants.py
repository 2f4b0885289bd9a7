"""Tenant routes: parse, make one domain call, map the result."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Response, status

from service.api import convert, schemas
from service.api.deps import ProvisionerDep, TenantIdPath
from service.api.problems import responses
from service.errors import InvalidRequest
from service.identifiers import is_tenant_id
from service.tenants.create import CreateRequest
from service.tenants.repair import Accept

router = APIRouter(prefix="/tenants", tags=["tenants"])


def _encode_cursor(tenant_id: str) -> str:
    return base64.urlsafe_b64encode(tenant_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not is_tenant_id(value):
        raise InvalidRequest("invalid cursor", parameter="cursor")
    return value


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    responses={
        201: {"model": schemas.TenantCreated, "description": "Created, with the connection URL of its role."},
        200: {"model": schemas.TenantOut, "description": "The tenant already exists with this body (replay)."},
        202: {
            "model": schemas.TenantCreated,
            "description": "Accepted (Prefer: respond-async): recorded and queued (state queued); the role is made "
            "with the password of this answer when a worker starts it; poll the Location.",
        },
        **responses(409, 422, 500, 503),
    },
)
async def create_tenant(
    body: schemas.TenantCreate,
    provisioner: ProvisionerDep,
    response: Response,
    prefer: Annotated[str | None, Header(description="respond-async: answer 202 at once.")] = None,
) -> schemas.TenantOut | schemas.TenantCreated:
    """Create a tenant (database, login role, migrations 0000 → latest, seed), or return it if it exists."""
    wait = "respond-async" not in (prefer or "").lower()
    request = CreateRequest(
        id=body.id, name=body.name, seed=dict(body.seed), strategy=body.strategy, server=body.server
    )
    tenant, created, url = await provisioner.create(request, wait=wait)
    response.headers["Location"] = f"/tenants/{tenant.id}"
    out = convert.tenant(tenant, provisioner.migrations.latest_version)
    if not created or url is None:
        response.status_code = status.HTTP_200_OK
        return out
    if not wait:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Preference-Applied"] = "respond-async"
    response.headers["Cache-Control"] = "no-store"
    return schemas.TenantCreated(**out.model_dump(), connection_url=url)


@router.post(
    "/{tenant_id}/credentials/rotate",
    response_model=schemas.Credentials,
    responses=responses(404, 409, 422, 503),
)
async def rotate_credentials(
    tenant_id: TenantIdPath, provisioner: ProvisionerDep, response: Response
) -> schemas.Credentials:
    """Give the tenant's login role a new password; the old one stops working. The answer is the only copy."""
    url = await provisioner.rotate_credentials(tenant_id)
    response.headers["Cache-Control"] = "no-store"
    return schemas.Credentials(connection_url=url)


@router.get("", response_model=schemas.TenantPage, responses=responses(422, 503))
async def list_tenants(
    provisioner: ProvisionerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[schemas.LifecycleState | None, Query()] = None,
    schema_status: Annotated[
        schemas.SchemaStatusValue | None,
        Query(
            alias="status",
            description="Only tenants whose schema has this status, judged live per tenant: a page examines up to "
            "`limit` tenants and may hold fewer matches (even none) while `next` is set.",
        ),
    ] = None,
) -> schemas.TenantPage:
    """Tenants in id order, a page at a time."""
    after = None if cursor is None else _decode_cursor(cursor)
    if schema_status is not None:
        found, last = await provisioner.list_by_status(schema_status, state=state, after=after, limit=limit)
        latest = provisioner.migrations.latest_version
        return schemas.TenantPage(
            items=[convert.tenant(t, latest) for t in found], next=None if last is None else _encode_cursor(last)
        )
    rows = await provisioner.list(state=state, after=after, limit=limit + 1)
    latest = provisioner.migrations.latest_version
    items = [convert.tenant(t, latest) for t in rows[:limit]]
    return schemas.TenantPage(items=items, next=_encode_cursor(rows[limit - 1].id) if len(rows) > limit else None)


@router.get("/{tenant_id}", response_model=schemas.TenantOut, responses=responses(404, 422, 503))
async def get_tenant(tenant_id: TenantIdPath, provisioner: ProvisionerDep) -> schemas.TenantOut:
    """One tenant's lifecycle state and last error."""
    tenant = await provisioner.get(tenant_id)
    return convert.tenant(tenant, provisioner.migrations.latest_version)


@router.get("/{tenant_id}/events", response_model=schemas.EventPage, responses=responses(404, 422, 503))
async def tenant_events(
    tenant_id: TenantIdPath, provisioner: ProvisionerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> schemas.EventPage:
    """Every operation run on the tenant (create, migrate, delete, ...), newest first, with the acting role."""
    found = await provisioner.events(tenant_id, limit)
    return schemas.EventPage(items=[schemas.EventOut.model_validate(e, from_attributes=True) for e in found])


@router.get("/{tenant_id}/schema", response_model=schemas.SchemaOut, responses=responses(404, 409, 422, 503))
async def get_schema(tenant_id: TenantIdPath, provisioner: ProvisionerDep) -> schemas.SchemaOut:
    """The tenant's migration level, read live from its own history table."""
    return convert.schema_status(await provisioner.schema(tenant_id))


@router.post("/{tenant_id}/migrate", response_model=schemas.SchemaOut, responses=responses(404, 409, 422, 500, 503))
async def migrate_tenant(
    tenant_id: TenantIdPath,
    provisioner: ProvisionerDep,
    body: Annotated[schemas.MigrateRequest | None, Body()] = None,
) -> schemas.SchemaOut:
    """Apply the pending migrations under the tenant's lock."""
    allow = body.allow_out_of_order if body is not None else False
    return convert.schema_status(await provisioner.migrate(tenant_id, allow_out_of_order=allow))


@router.post("/{tenant_id}/repair", response_model=schemas.SchemaOut, responses=responses(404, 409, 422, 503))
async def repair_tenant(
    tenant_id: TenantIdPath, provisioner: ProvisionerDep, body: schemas.RepairRequest
) -> schemas.SchemaOut:
    """Accept edited, applied files as they now read (their sha256 must be the files' current one).

    The history keeps the hash that ran next to the accepted one; nothing is re-run. Answers the new schema status.
    """
    accepts = [Accept(version=a.version, sha256=a.sha256) for a in body.accept]
    return convert.schema_status(await provisioner.repair(tenant_id, accepts))


@router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(400, 404, 409, 422, 503),
)
async def delete_tenant(
    tenant_id: TenantIdPath,
    provisioner: ProvisionerDep,
    confirm: Annotated[str | None, Query(max_length=40, description="Must repeat the tenant id.")] = None,
    purge: Annotated[bool, Query(description="Remove everything now instead of keeping it deleted.")] = False,
) -> Response:
    """Delete the tenant: its role can no longer log in, its database takes no connection (sessions are ended), and
    it is `deleted` (GET shows it; `?state=deleted` lists it) until TENANTS_DELETE_RETENTION has passed; POST
    /tenants/{id}/undelete brings it back meanwhile. With `purge=true` (or once the retention has passed) the
    database, the role and the backups are dropped and the id is free again. A tenant that never became ready is
    purged at once; an adopted tenant is only forgotten (the service never drops a database it did not create).
    """
    await provisioner.delete(tenant_id, confirm=confirm, purge=purge)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
