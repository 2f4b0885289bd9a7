"""Recovery: finish or undo what was left in flight (``provisioning``, ``deleting``, a restore's or a delete's step,
owned leftovers of a failed tenant, half-written backups) by a dead process or by an outage that cut an operation
short, close the operations it left ``running`` in the audit trail with their outcome, purge deleted tenants past
their retention, and drop template databases whose build was interrupted.

It runs in the background for the life of the process (:func:`loop`): a first pass at start, which holds nothing
else back (readiness, tenants not concerned), then one every ``recovery_interval`` seconds, so a tenant stranded by
a server restart is finished or undone within that bound of the server answering again, without a restart of the
service. Tenants whose lock is held (an operation of this process, or of another live replica) are left to it;
several are recovered at once (up to ``max_parallel``: each ``DROP DATABASE`` waits for a checkpoint).
"""

from __future__ import annotations

import asyncio
import logging

from service.errors import ServiceError
from service.store import catalog
from service.store import queue as queue_store
from service.store.catalog import Tenant
from service.store.db import Conn, as_unavailable
from service.tenants import backup, delete, move, owned, restore
from service.tenants.context import Context
from service.tenants.steps import locked

log = logging.getLogger(__name__)

_INTERRUPTED = {
    "code": "interrupted",
    "message": "the process ended during this operation; recovery closed it (the tenant's state and its own "
    "history show what was done)",
}


async def recover(ctx: Context, *, templates: bool = True) -> int:
    """One pass; return how many tenants were touched. DatabaseUnavailable when the catalog cannot be read."""
    async with ctx.server.catalog() as conn:
        stuck = await catalog.unfinished(conn)
    gate = asyncio.Semaphore(ctx.settings.max_parallel)

    async def one(tenant: Tenant) -> bool:
        async with gate:
            return await _try(ctx, tenant)

    touched = sum(await asyncio.gather(*(one(t) for t in stuck)))
    touched += await _clean_backups(ctx)
    touched += await delete.purge_expired(ctx)
    await _close_operations(ctx)
    if templates:
        await _drop_orphan_templates(ctx)
    return touched


async def loop(ctx: Context) -> None:
    """Recover at start and then every ``recovery_interval`` seconds, for the life of the process."""
    first = True
    while True:
        try:
            touched = await recover(ctx, templates=first)
            first = False
            if touched:
                log.warning("recovered %d tenant(s) left in flight", touched)
        except ServiceError as exc:  # the catalog is unreachable: the next pass retries
            log.warning("recovery pass skipped: %s", exc.message)
        except Exception as exc:
            unavailable = as_unavailable(exc)
            if unavailable is None:
                log.exception("recovery pass failed")
            else:
                log.warning("recovery pass skipped: %s", unavailable.message)
        await asyncio.sleep(ctx.settings.recovery_interval)


async def _try(ctx: Context, tenant: Tenant) -> bool:
    """Recover one tenant if its lock is free; whether it was touched."""
    try:
        lease = await ctx.locks.try_acquire(tenant.id)
    except ServiceError as exc:
        log.warning("cannot recover tenant %s now: %s", tenant.id, exc.message)
        return False
    if lease is None:
        return False  # a live operation (here or in another replica) is working on it
    try:
        current = await catalog.get(lease.conn, tenant.id)
        if current is None or not _unfinished(current):
            return False  # finished by its own operation between the listing and the lock
        await _recover_one(ctx, lease.conn, current)
        log.warning("recovered tenant %s (was %s)", current.id, current.state)
        return True
    except Exception as exc:  # its server is still down: the next pass retries
        unavailable = exc if isinstance(exc, ServiceError) else as_unavailable(exc)
        if unavailable is None:
            log.exception("cannot recover tenant %s", tenant.id)
        else:
            log.warning("cannot recover tenant %s now: %s", tenant.id, unavailable.message)
        return False
    finally:
        await lease.release()


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


def _unfinished(t: Tenant) -> bool:
    """What ``catalog.unfinished`` selects, for a row read again under the tenant's lock (it may have finished
    since it was listed)."""
    in_flight = t.state in ("provisioning", "deleting", "restoring", "moving") or t.step is not None
    return in_flight or (t.state == "failed" and (t.database_owned or t.role_owned))


async def _recover_one(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    op = (tenant.step or {}).get("op")
    if op == "restore":
        await restore.recover(ctx, conn, tenant)
    elif op == "move":
        await move.recover(ctx, conn, tenant)
    elif op in ("delete", "undelete") or tenant.state == "deleting":
        await delete.recover(ctx, conn, tenant)
    elif tenant.state == "provisioning":
        job = await queue_store.job(conn, tenant.id)
        if job is not None and job.attempts < ctx.settings.queue_attempts:
            # A queued creation: its client holds a 202 and a password, so it is started again, not failed.
            await owned.drop_owned(ctx, conn, tenant)
            await queue_store.requeue(conn, tenant.id)
            ctx.queue_wakeup.set()
            return
        error = {"code": "interrupted", "message": "creation was interrupted; POST again to retry"}
        await owned.fail(ctx, conn, tenant, error)
        await queue_store.dequeue(conn, tenant.id)
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


async def settle(ctx: Context, tenant_id: str) -> None:
    """Finish or undo, now, what a dead process left in flight on the tenant (a move a killed drain was running),
    waiting for its lock: held, a live operation is working on it, and what it leaves is not in flight. Raises
    TenantBusy past the bound."""
    async with locked(ctx, tenant_id) as lease:
        current = await catalog.get(lease.conn, tenant_id)
        if current is not None and _unfinished(current):
            await _recover_one(ctx, lease.conn, current)
            log.warning("recovered tenant %s (was %s)", current.id, current.state)
