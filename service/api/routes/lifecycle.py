"""A tenant's life after creation: backups, restore, undelete, move. Parse, one domain call, map."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response, status

from service.api import convert
from service.api import lifecycle_schemas as ls
from service.api.deps import ProvisionerDep, TenantIdPath
from service.api.problems import responses
from service.api.schemas import TenantCreated, TenantOut
from service.store.lifecycle import Backup

router = APIRouter(prefix="/tenants", tags=["lifecycle"])
BackupIdPath = Annotated[str, Path(pattern=ls.BACKUP_ID_PATTERN, max_length=32, description="Backup id.")]
PreferHeader = Annotated[str | None, Header(description="respond-async: answer 202 at once, then poll.")]


def _backup(b: Backup) -> ls.BackupOut:
    return ls.BackupOut(
        id=b.id,
        tenant=b.tenant_id,
        state="complete" if b.state == "complete" else "writing",
        version=b.version,
        server=b.server,
        size_bytes=b.size_bytes,
        sha256=b.sha256,
        created_at=b.created_at,
    )


def _is_async(prefer: str | None) -> bool:
    return "respond-async" in (prefer or "").lower()


@router.post(
    "/{tenant_id}/backups",
    status_code=status.HTTP_201_CREATED,
    response_model=ls.BackupOut,
    responses={202: {"model": ls.BackupOut, "description": "Accepted (Prefer: respond-async): poll its Location."},
               **responses(404, 409, 422, 500, 503)},
)  # fmt: skip
async def create_backup(
    tenant_id: TenantIdPath, provisioner: ProvisionerDep, response: Response, prefer: PreferHeader = None
) -> ls.BackupOut:
    """Back up the tenant's database (its history included): a pg_dump archive and a manifest, written atomically
    under TENANTS_BACKUP_DIR. The oldest past TENANTS_BACKUP_RETENTION are removed."""
    wait = not _is_async(prefer)
    found = await provisioner.backup(tenant_id, wait=wait)
    response.headers["Location"] = f"/tenants/{tenant_id}/backups/{found.id}"
    if not wait:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Preference-Applied"] = "respond-async"
    return _backup(found)


@router.get("/{tenant_id}/backups", response_model=ls.BackupList, responses=responses(404, 422, 503))
async def list_backups(tenant_id: TenantIdPath, provisioner: ProvisionerDep) -> ls.BackupList:
    """The tenant's complete backups, newest first (a deleted tenant's too, until it is purged)."""
    return ls.BackupList(items=[_backup(b) for b in await provisioner.backups(tenant_id)])


@router.get("/{tenant_id}/backups/{backup_id}", response_model=ls.BackupOut, responses=responses(404, 422, 503))
async def get_backup(tenant_id: TenantIdPath, backup_id: BackupIdPath, provisioner: ProvisionerDep) -> ls.BackupOut:
    """One backup: ``writing`` while it is being taken, then ``complete``; 404 if it failed."""
    return _backup(await provisioner.backup_info(tenant_id, backup_id))


@router.post(
    "/{tenant_id}/restore",
    response_model=TenantOut,
    responses={201: {"model": TenantCreated, "description": "Restored as a new tenant (`as`), with its password."},
               **responses(404, 409, 422, 500, 503)},
)  # fmt: skip
async def restore_tenant(
    tenant_id: TenantIdPath, body: ls.RestoreRequest, provisioner: ProvisionerDep, response: Response
) -> TenantOut | TenantCreated:
    """Restore a backup. In place: the backup goes into a new database, is checked (history, schema at its level)
    and only then swapped in; the role and its password keep working. A backup of an older level is then behind.
    With `as`: into a new tenant (201), leaving this one alone."""
    tenant, url = await provisioner.restore(tenant_id, body.backup, as_id=body.as_)
    out = convert.tenant(tenant, provisioner.migrations.latest_version)
    if url is None:
        return out
    response.status_code = status.HTTP_201_CREATED
    response.headers["Location"] = f"/tenants/{tenant.id}"
    response.headers["Cache-Control"] = "no-store"
    return TenantCreated(**out.model_dump(), connection_url=url)


@router.post("/{tenant_id}/undelete", response_model=TenantOut, responses=responses(404, 409, 422, 503))
async def undelete_tenant(tenant_id: TenantIdPath, provisioner: ProvisionerDep) -> TenantOut:
    """Bring a deleted tenant back with all its data: its role logs in again with the same password. Only within
    TENANTS_DELETE_RETENTION of the delete (404 after: it is purged)."""
    return convert.tenant(await provisioner.undelete(tenant_id), provisioner.migrations.latest_version)


@router.post(
    "/{tenant_id}/move",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ls.TenantMoving,
    responses=responses(404, 409, 422, 503),
)
async def move_tenant(
    tenant_id: TenantIdPath, body: ls.MoveRequest, provisioner: ProvisionerDep, response: Response
) -> ls.TenantMoving:
    """Move the tenant to another server; poll GET /tenants/{id}: `moving` with its `progress`, then `ready` with
    the new `server` (or, if the move failed and was undone, `ready` on the old one; /events says why).

    Writes stop on the source for the copy (clients get an error, never a lost write); the copy is verified
    (history, schema, row count and checksum per table, sequences) before the catalog switches; the role is made on
    the target with the same password (reading its verifier needs a superuser admin role: else 409 move_refused,
    or `rotate_password`); the tenant is `ready` on the new server once its role may connect there, and the source
    database is dropped after that (`progress.stage` `cleanup` until it is gone). Reads stop during the copy too."""
    url = None
    if body.rotate_password:
        tenant, url = await provisioner.move_with_new_password(tenant_id, body.server)
    else:
        tenant = await provisioner.move(tenant_id, body.server)
    response.headers["Location"] = f"/tenants/{tenant_id}"
    out = convert.tenant(tenant, provisioner.migrations.latest_version)
    return ls.TenantMoving(**out.model_dump(), connection_url=url)
