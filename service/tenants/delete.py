"""Delete a tenant: closed and kept for TENANTS_DELETE_RETENTION (undelete brings it back), then purged.

``DELETE`` closes the tenant: its role can no longer log in (``NOLOGIN``), its database takes no connection
(``ALLOW_CONNECTIONS false``, sessions ended) and the state is ``deleted``; nothing is dropped, so
:func:`undelete` gives it back with all its data and the same password. The id stays taken meanwhile. A purge
(``?purge=true``, or the retention elapsed) drops the database and the role, removes the tenant's backups and
forgets it. A tenant that never became ready (``failed``) has nothing to keep: it is purged at once.

The step is recorded first (state ``deleting`` with ``tenants.step``), so a crash in the middle is finished by
whoever next holds the tenant's lock. An adopted tenant's database was not made here (``database_owned`` is false):
it is given back as it was before adoption (:mod:`service.tenants.unadopt`), and stays on the server with its data,
adoptable again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from service.errors import ConfirmationRequired, ServiceError, TenantNotDeleted, TenantNotFound
from service.identifiers import quote_ident, validate_tenant_id
from service.store import catalog, lifecycle
from service.store.catalog import Tenant
from service.store.db import INVALID_CATALOG_NAME, Conn, PostgresError, sqlstate
from service.tenants import backup, copies, move, owned, restore, unadopt
from service.tenants.context import Context
from service.tenants.steps import locked, recorded

log = logging.getLogger(__name__)


async def delete(ctx: Context, tenant_id: str, *, confirm: str | None, purge: bool = False) -> None:
    """Raises ConfirmationRequired (``confirm`` is not the id), TenantNotFound, TenantBusy."""
    validate_tenant_id(tenant_id)
    if confirm != tenant_id:
        raise ConfirmationRequired(tenant=tenant_id)
    async with locked(ctx, tenant_id) as lease:
        tenant = await catalog.get(lease.conn, tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant=tenant_id)
        op = (tenant.step or {}).get("op")
        if op in ("move", "restore"):  # left in flight by a dead process (we hold its lock): settle it first
            await (move.recover if op == "move" else restore.recover)(ctx, lease.conn, tenant)
            tenant = await catalog.get(lease.conn, tenant_id)
            assert tenant is not None
        async with recorded(lease.conn, tenant_id, "delete", {"purge": True} if purge else None):
            if purge or not tenant.database_owned or tenant.state not in ("ready", "deleted"):
                await finish(ctx, lease.conn, tenant)
            elif tenant.state == "ready":
                await lifecycle.set_step(lease.conn, tenant.id, {"op": "delete"}, "deleting")
                ctx.failpoint("delete.after_mark")
                await close(ctx, lease.conn, tenant)


async def close(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Lock the role out and close the database, then mark the tenant ``deleted``; idempotent (recovery)."""
    await ctx.connections.forget(tenant.server, tenant.database)
    async with ctx.target(tenant).admin() as admin:
        if tenant.role_owned:
            await admin.execute(f"ALTER ROLE {quote_ident(tenant.database)} NOLOGIN")
        await copies.close(admin, tenant.database)
    ctx.failpoint("delete.after_close")
    await lifecycle.mark_deleted(conn, tenant.id, True)


async def undelete(ctx: Context, tenant_id: str) -> Tenant:
    """Give a deleted tenant back (role logs in again, database open), within TENANTS_DELETE_RETENTION.

    Raises TenantNotFound (also once the retention has elapsed: it is purged then), TenantNotDeleted, TenantBusy.
    """
    async with locked(ctx, tenant_id) as lease:
        tenant = await catalog.get(lease.conn, tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant=tenant_id)
        if tenant.state != "deleted":
            raise TenantNotDeleted(tenant=tenant_id, state=tenant.state)
        if _expired(ctx, tenant):
            async with recorded(lease.conn, tenant_id, "delete", {"purge": True, "expired": True}):
                await finish(ctx, lease.conn, tenant)
            raise TenantNotFound("the tenant was deleted longer ago than TENANTS_DELETE_RETENTION", tenant=tenant_id)
        async with recorded(lease.conn, tenant_id, "undelete"):
            tenant = await lifecycle.set_step(lease.conn, tenant_id, {"op": "undelete"})
            ctx.failpoint("undelete.after_mark")
            return await reopen(ctx, lease.conn, tenant)


async def reopen(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    """Open the database and let the role log in again, then mark the tenant ``ready``; idempotent (recovery)."""
    async with ctx.target(tenant).admin() as admin:
        await copies.reopen(admin, tenant.database)
        if tenant.role_owned:
            await admin.execute(f"ALTER ROLE {quote_ident(tenant.database)} LOGIN")
    return await lifecycle.mark_deleted(conn, tenant.id, False)


def _expired(ctx: Context, tenant: Tenant) -> bool:
    deleted_at = tenant.deleted_at or datetime.now(UTC)
    return datetime.now(UTC) - deleted_at > timedelta(seconds=ctx.settings.delete_retention)


async def finish(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Purge: mark, drop what is owned, remove the backups, forget. Also how recovery finishes a purge a dead
    process left."""
    await lifecycle.set_step(conn, tenant.id, {"op": "delete", "purge": True}, "deleting")
    ctx.failpoint("delete.after_mark")
    # Also for an adopted database, which stays: the service keeps no connection to what it no longer manages.
    await ctx.connections.forget(tenant.server, tenant.database)
    await owned.drop_owned(ctx, conn, tenant)
    if not tenant.database_owned and tenant.adoption is not None:
        await _give_back(ctx, tenant, tenant.adoption)
    ctx.failpoint("delete.after_drop")
    await backup.remove_all(ctx, conn, tenant.id)
    await catalog.remove(conn, tenant.id)


async def recover(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Finish what a dead process left: a close, an undelete, or a purge."""
    step = tenant.step or {}
    if step.get("op") == "undelete":
        await reopen(ctx, conn, tenant)
    elif step.get("op") == "delete" and not step.get("purge"):
        await close(ctx, conn, tenant)
    else:
        await finish(ctx, conn, tenant)


async def purge_expired(ctx: Context) -> int:
    """Purge the tenants deleted longer ago than the retention (those whose lock is free); returns how many."""
    async with ctx.server.catalog() as conn:
        ids = await lifecycle.expired(conn, ctx.settings.delete_retention)
    purged = 0
    for tenant_id in ids:
        lease = await ctx.locks.try_acquire(tenant_id)
        if lease is None:
            continue
        try:
            tenant = await catalog.get(lease.conn, tenant_id)
            if tenant is not None and tenant.state == "deleted" and _expired(ctx, tenant):
                async with recorded(lease.conn, tenant_id, "delete", {"purge": True, "expired": True}):
                    await finish(ctx, lease.conn, tenant)
                purged += 1
        except ServiceError as exc:
            log.warning("cannot purge deleted tenant %s now: %s", tenant_id, exc.message)
        finally:
            await lease.release()
    return purged


async def _give_back(ctx: Context, tenant: Tenant, before: dict[str, Any]) -> None:
    """An adopted database as it was before adoption; nothing to do when someone dropped it meanwhile."""
    try:
        tconn = await ctx.connect(tenant)
    except PostgresError as exc:
        if sqlstate(exc) == INVALID_CATALOG_NAME:
            return
        raise
    try:
        await unadopt.restore(tconn, tenant.database, before)
    finally:
        await tconn.close()
