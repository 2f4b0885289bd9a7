"""Delete a tenant: drop its database and role (ending their connections), then forget it.

The state becomes ``deleting`` (committed) before anything is dropped, so a crash in the middle is finished by
whoever next holds the tenant's lock. An adopted tenant's database was not made here (``database_owned`` is false):
it is only forgotten, and stays on the server with its data and history, adoptable again.
"""

from __future__ import annotations

from service.errors import ConfirmationRequired, TenantNotFound
from service.identifiers import validate_tenant_id
from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import Conn
from service.tenants import owned
from service.tenants.context import Context
from service.tenants.steps import locked, recorded


async def delete(ctx: Context, tenant_id: str, *, confirm: str | None) -> None:
    """Raises ConfirmationRequired (``confirm`` is not the id), TenantNotFound, TenantBusy."""
    validate_tenant_id(tenant_id)
    if confirm != tenant_id:
        raise ConfirmationRequired(tenant=tenant_id)
    async with locked(ctx, tenant_id) as lease:
        tenant = await catalog.get(lease.conn, tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant=tenant_id)
        async with recorded(lease.conn, tenant_id, "delete"):
            await finish(ctx, lease.conn, tenant)


async def finish(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Mark, drop what is owned, forget: also how recovery finishes a delete a dead process left."""
    await catalog.mark(conn, tenant.id, "deleting", error=tenant.error)
    ctx.failpoint("delete.after_mark")
    # Also for an adopted database, which stays: the service keeps no connection to what it no longer manages.
    await ctx.connections.forget(tenant.server, tenant.database)
    await owned.drop_owned(ctx, conn, tenant)
    ctx.failpoint("delete.after_drop")
    await catalog.remove(conn, tenant.id)
