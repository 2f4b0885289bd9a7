"""What a tenant owns on its server, made and unmade so that a crash at any line can be finished or undone.

The catalog records ownership *before* the step that cannot run in a transaction: ``role_owned`` before
``CREATE ROLE``, ``database_owned`` before ``CREATE DATABASE``. Whoever next holds the tenant's lock drops what the
catalog records, and never a database or a role the catalog did not record as its own.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from service.errors import DatabaseExists, RoleExists
from service.identifiers import quote_ident
from service.schema.template import Template
from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import DUPLICATE_DATABASE, UNIQUE_VIOLATION, Conn, sqlstate
from service.tenants import credentials, roles
from service.tenants.context import Context

log = logging.getLogger(__name__)


async def create_role(ctx: Context, conn: Conn, tenant: Tenant) -> str:
    """Make the tenant's login role (named like its database); return its password. RoleExists: a foreign one."""
    password = credentials.new_password()
    await create_role_verified(ctx, conn, tenant, credentials.scram_sha256(password))
    return password


async def create_role_verified(ctx: Context, conn: Conn, tenant: Tenant, verifier: str) -> None:
    """:func:`create_role` given the SCRAM verifier of its password (a queued creation keeps only that)."""
    await catalog.set_role_owned(conn, tenant.id, True)
    try:
        async with ctx.target(tenant).admin() as admin:
            await roles.create(admin, tenant.database, verifier=verifier)
    except RoleExists:  # someone outside the service made it a moment ago
        await catalog.set_role_owned(conn, tenant.id, False)
        raise


async def create_database(ctx: Context, conn: Conn, tenant: Tenant, template: Template | None = None) -> None:
    """An empty database from template0, or with ``template`` a copy of that migration set's template.

    Raises DatabaseExists when a foreign database took the name a moment ago (it is then not ours to drop)."""
    await catalog.set_owned(conn, tenant.id, True)
    try:
        ctx.failpoint("create.after_owned")
        async with ctx.target(tenant).admin() as admin:
            if template is not None:
                await template.create_database(admin, tenant.database)
            else:
                await admin.execute(f"CREATE DATABASE {quote_ident(tenant.database)} TEMPLATE template0")
        ctx.failpoint("create.after_database")
    except asyncpg.PostgresError as exc:
        if sqlstate(exc) in (DUPLICATE_DATABASE, UNIQUE_VIOLATION):
            await catalog.set_owned(conn, tenant.id, False)
            raise DatabaseExists(database=tenant.database) from exc
        raise


async def fail(ctx: Context, conn: Conn, tenant: Tenant, error: dict[str, Any]) -> None:
    """Drop what a failed creation made and record why; a new tenant is all or nothing."""
    await drop_owned(ctx, conn, tenant)
    await catalog.mark(conn, tenant.id, "failed", error=error)


async def drop_owned(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Drop the database and the role the catalog records as the tenant's own, and clear the records."""
    # Re-read: the flag is set during the operation, so the caller's snapshot may predate it.
    current = await catalog.get(conn, tenant.id)
    if current is None:
        return
    if current.database_owned:
        await ctx.connections.forget(current.server, current.database)
        async with ctx.target(current).admin() as admin:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(current.database)} WITH (FORCE)")
        await catalog.set_owned(conn, tenant.id, False)
    if current.role_owned:
        await _drop_role(ctx, conn, current)


async def _drop_role(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Drop the tenant's role; first revoke its privileges in a database that stays (one not ours)."""
    target = ctx.target(tenant)
    async with target.admin() as admin:
        dropped = await roles.drop(admin, tenant.database)
    if not dropped:
        tconn = await ctx.connect(tenant)
        try:
            await roles.disown(tconn, tenant.database)
        finally:
            await tconn.close()
        async with target.admin() as admin:
            dropped = await roles.drop(admin, tenant.database)
        if not dropped:
            log.warning("role %s still holds privileges; kept for a later retry", tenant.database)
            return
    await catalog.set_role_owned(conn, tenant.id, False)
