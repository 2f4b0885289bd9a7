"""Recovery: finish or undo what a dead process left in flight (``provisioning``, ``deleting``, owned leftovers),
close the operations it left ``running`` in the audit trail with their outcome, and drop template databases whose
build was interrupted. Runs at start; tenants another live replica is working on (their lock is held) are left to
it."""

from __future__ import annotations

import logging

from service.errors import ServiceError
from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import Conn
from service.tenants import backup, delete, move, owned, restore
from service.tenants.context import Context

log = logging.getLogger(__name__)

_INTERRUPTED = {
    "code": "interrupted",
    "message": "the process ended during this operation; recovery closed it (the tenant's state and its own "
    "history show what was done)",
}


async def recover(ctx: Context) -> int:
    """Return how many tenants were touched."""
    async with ctx.server.catalog() as conn:
        stuck = await catalog.unfinished(conn)
    touched = 0
    for tenant in stuck:
        lease = await ctx.locks.try_acquire(tenant.id)
        if lease is None:
            continue  # a live process (another replica) is working on it
        try:
            current = await catalog.get(lease.conn, tenant.id)
            if current is None:
                continue
            await _recover_one(ctx, lease.conn, current)
            touched += 1
            log.warning("recovered tenant %s (was %s)", current.id, current.state)
        except ServiceError as exc:  # its server is down: the next start, or the next request on it, retries
            log.warning("cannot recover tenant %s now: %s", tenant.id, exc.message)
        finally:
            await lease.release()
    touched += await _clean_backups(ctx)
    touched += await delete.purge_expired(ctx)
    await _close_operations(ctx)
    await _drop_orphan_templates(ctx)
    return touched


async def _clean_backups(ctx: Context) -> int:
    """Backups a dead process left half-written, and files no catalog row names, per tenant under its lock."""
    async with ctx.server.catalog() as conn:
        candidates = await backup.leftovers(ctx, conn)
    removed = 0
    for tenant_id in sorted(candidates):
        lease = await ctx.locks.try_acquire(tenant_id)
        if lease is None:
            continue
        try:
            removed += await backup.clean(ctx, lease.conn, tenant_id)
        finally:
            await lease.release()
    if removed:
        log.warning("removed %d half-written or unlisted backup file(s)", removed)
    return removed


async def _recover_one(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    op = (tenant.step or {}).get("op")
    if op == "restore":
        await restore.recover(ctx, conn, tenant)
    elif op == "move":
        await move.recover(ctx, conn, tenant)
    elif op in ("delete", "undelete") or tenant.state == "deleting":
        await delete.recover(ctx, conn, tenant)
    elif tenant.state == "provisioning":
        error = {"code": "interrupted", "message": "creation was interrupted; POST again to retry"}
        await owned.fail(ctx, conn, tenant, error)
    else:
        await owned.drop_owned(ctx, conn, tenant)


async def _close_operations(ctx: Context) -> None:
    """A ``running`` operation whose tenant's lock is free was interrupted: a delete whose tenant is deleted or gone
    (now, or by the recovery above) succeeded; anything else failed, ``interrupted``."""
    async with ctx.server.catalog() as conn:
        tenant_ids = await catalog.with_running_operations(conn)
    for tenant_id in tenant_ids:
        lease = await ctx.locks.try_acquire(tenant_id)
        if lease is None:
            continue
        try:
            tenant = await catalog.get(lease.conn, tenant_id)
            # A creation undone above says so in the tenant's own error: the audit trail says the same.
            undone = tenant is not None and tenant.error is not None and tenant.error.get("code") == "interrupted"
            error = tenant.error if undone and tenant is not None and tenant.error is not None else _INTERRUPTED
            deleted = tenant is None or tenant.state == "deleted"
            closed = await catalog.close_interrupted(lease.conn, tenant_id, "delete" if deleted else None, error)
            log.warning("closed %d interrupted operation(s) of tenant %s", closed, tenant_id)
        finally:
            await lease.release()


async def _drop_orphan_templates(ctx: Context) -> None:
    for template in ctx.templates.values():
        try:
            dropped = await template.drop_orphans()
        except ServiceError as exc:
            log.warning("cannot look for template databases on a server: %s", exc.message)
            continue
        if dropped:
            log.warning("dropped %d template database(s) whose build was interrupted", len(dropped))
