"""Rotate a tenant's credentials: a new password for its login role (the old one stops working at once)."""

from __future__ import annotations

from service.errors import RoleExists
from service.store.catalog import Tenant
from service.store.db import Conn
from service.tenants import credentials, owned, roles
from service.tenants.context import Context
from service.tenants.steps import locked, ready, recorded


async def rotate_credentials(ctx: Context, tenant_id: str) -> str:
    """Give the tenant's role a new password and return the new connection URL.

    The role's privileges are asserted again; a ready tenant made before tenants had roles gets its role here.
    Raises TenantNotFound, TenantNotReady, RoleExists (a foreign role has the name), TenantBusy.
    """
    async with locked(ctx, tenant_id) as lease:
        tenant = await ready(lease.conn, tenant_id)
        async with recorded(lease.conn, tenant_id, "rotate_credentials"):
            password = await _rotate(ctx, lease.conn, tenant)
    dsn = ctx.target(tenant).admin_dsn
    return credentials.connection_url(dsn, tenant.database, password, tenant.database)


async def _rotate(ctx: Context, conn: Conn, tenant: Tenant) -> str:
    target = ctx.target(tenant)
    if tenant.role_owned:
        password = credentials.new_password()
        async with target.admin() as admin:
            await roles.assert_attributes(admin, tenant.database)
            await roles.set_password(admin, tenant.database, password)
    else:
        async with target.admin() as admin:
            if await roles.exists(admin, tenant.database):
                raise RoleExists(role=tenant.database)
        password = await owned.create_role(ctx, conn, tenant)
    async with target.admin() as admin:
        await roles.grant_connect(admin, tenant.database, tenant.database)
    tconn = await ctx.connect(tenant)
    try:
        await roles.grant_objects(tconn, tenant.database)
    finally:
        await tconn.close()
    return password
