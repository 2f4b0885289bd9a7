"""Move a tenant to another server without losing a committed write.

Before anything is recorded, the source's admin role must be able to do what the move needs there (read the tenant
role's SCRAM verifier, end its sessions): else ``move_refused`` says what the operator does (:mod:`.move_admin`).
Then the steps, each recorded in ``tenants.step`` before it touches a server (state ``moving``):

1. ``target``: the tenant's role is made on the target with the source's SCRAM verifier (the same password logs
   in there; with ``rotate_password`` the verifier of a new one, set on the source first), then an empty database.
2. ``frozen``: writes stop on the source: the role's ``CONNECT`` is revoked and its sessions are ended, and the
   step waits until they are gone, so every transaction that committed is in what ``pg_dump`` reads next. Clients
   get a clear error (terminated session, then ``permission denied for database``), never a write that is lost.
   Reads stop too: PostgreSQL has no read-only mode a role cannot leave (``default_transaction_read_only`` is the
   client's to change), so the role keeps no way in until the switch.
3. ``copy``: ``pg_dump | pg_restore`` (PostgreSQL's own tools), the source's rows fingerprinted meanwhile (it is
   frozen), then the role's grants on the copy.
4. verify: the copy's history and schema (against the expected schema at its level, indexes included) and, per
   table, the row count and a checksum, plus every sequence, equal the source's; else ``verification_failed`` and
   the move is undone.
5. switch: one catalog statement puts the tenant on the target, ready (the commit point), stage ``cleanup``.
6. the role gets ``CONNECT`` on the target (not before the switch: a write acknowledged there and then undone would
   be lost): the tenant is ready there, and :func:`move` returns. The source's database and role are then dropped
   by the same holder of the tenant's lock, after the caller got its answer; the step stays ``cleanup`` (``GET``
   shows the tenant ``ready`` on its new server, ``progress.stage`` ``cleanup``) until they are gone.

Recovery undoes a move that had not switched (drops what the step says was made on the target, gives the role its
``CONNECT`` back on the source) and finishes one that had (``CONNECT`` on the target, drops the source's database
and role).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from service.errors import (
    DatabaseExists,
    MoveRefused,
    RoleExists,
    ServiceError,
    TenantNotReady,
    VerificationFailed,
)
from service.identifiers import validate_tenant_id
from service.store import catalog, lifecycle, pgtools
from service.store.catalog import Tenant
from service.store.db import Conn, Target
from service.store.locks import Lease
from service.tenants import copies, credentials, move_admin, placement, roles
from service.tenants.context import Context
from service.tenants.steps import error_dict, ready, recorded

log = logging.getLogger(__name__)


async def move(ctx: Context, tenant_id: str, server: str, *, wait: bool = False, until_dropped: bool = False) -> Tenant:
    """Start moving a ready tenant to ``server``; return it ``moving`` (``wait``: return it moved and ready, its
    source dropped after the return unless ``until_dropped``).

    Raises UnknownServer, ServerFull, ServerDraining, MoveRefused (already there, an adopted database, an admin role
    that may not read the verifier or end sessions), TenantNotFound, TenantNotReady, TenantBusy; with ``wait`` also
    what the move raises (VerificationFailed, ToolFailed, DatabaseUnavailable): the tenant is then back, ready.
    """
    tenant, _ = await _move(ctx, tenant_id, server, wait=wait, until_dropped=until_dropped, rotate=False)
    return tenant


async def move_with_new_password(
    ctx: Context, tenant_id: str, server: str, *, wait: bool = False
) -> tuple[Tenant, str]:
    """:func:`move`, the role given a new password first (on the source, at once: the old one stops working) and
    made on the target with it; for an admin role that may not read ``pg_authid`` (not a superuser). Returns the
    tenant and its connection URL on the target, which works once the move is done (on the source until then; if
    the move fails and is undone, the new password stays the one that works there)."""
    tenant, password = await _move(ctx, tenant_id, server, wait=wait, until_dropped=False, rotate=True)
    assert password is not None
    dsn = ctx.servers.target(server).admin_dsn
    return tenant, credentials.connection_url(dsn, tenant.database, password, tenant.database)


async def _move(
    ctx: Context, tenant_id: str, server: str, *, wait: bool, until_dropped: bool, rotate: bool
) -> tuple[Tenant, str | None]:
    validate_tenant_id(tenant_id)
    placement.require(ctx.servers, server)
    lease = await ctx.locks.acquire(tenant_id)
    try:
        tenant = await _start(ctx, lease.conn, tenant_id, server)
        # Before anything is recorded: a refusal leaves nothing in flight (a rotation is done, or not, at once).
        verifier, password = await move_admin.verifier_for_move(ctx.target(tenant), tenant.database, rotate=rotate)
        step = {"op": "move", "stage": "start", "from": tenant.server, "to": server}
        tenant = await lifecycle.set_step(lease.conn, tenant_id, step, "moving")
    except BaseException:
        await lease.release()
        raise
    if not wait:
        ctx.spawn(_in_background(ctx, lease, tenant, verifier))
        return tenant, password
    try:
        moved = await _until_ready(ctx, lease.conn, tenant, verifier)
    except BaseException:
        await lease.release()
        raise
    if until_dropped:
        done = await _dropped(ctx, lease, moved, raise_errors=True)
        return done or moved, password
    ctx.spawn(_drop_later(ctx, lease, moved))
    return moved, password


async def _start(ctx: Context, conn: Conn, tenant_id: str, server: str) -> Tenant:
    """The ready tenant, if it may go there; nothing recorded yet."""
    tenant = await ready(conn, tenant_id)
    step = tenant.step or {}
    if (step.get("op"), step.get("stage")) == ("move", "cleanup"):  # switched by a dead process, not cleaned up
        await finish(ctx, conn, tenant)
        tenant = await ready(conn, tenant_id)
    elif tenant.step is not None:
        raise TenantNotReady("an operation on the tenant is in flight", tenant=tenant_id, state=tenant.state)
    if tenant.server == server:
        raise MoveRefused("the tenant is already on this server", tenant=tenant_id, server=server)
    if not (tenant.database_owned and tenant.role_owned):
        raise MoveRefused("an adopted tenant's database is not the service's to move", tenant=tenant_id)
    counts = await catalog.count_by_server(conn)
    placement.choose(ctx.servers, counts, server, await lifecycle.draining(conn))  # ServerDraining, ServerFull
    return tenant


async def _in_background(ctx: Context, lease: Lease, tenant: Tenant, verifier: str) -> None:
    moved = None
    try:
        moved = await _until_ready(ctx, lease.conn, tenant, verifier)
    except ServiceError as exc:
        log.warning("moving %s failed: %s", tenant.id, exc.message)
    except Exception:
        log.exception("moving %s failed", tenant.id)
    finally:
        if moved is None:
            await lease.release()
    if moved is not None:
        await _drop_later(ctx, lease, moved)


async def _drop_later(ctx: Context, lease: Lease, moved: Tenant) -> None:
    await _dropped(ctx, lease, moved)


async def _dropped(ctx: Context, lease: Lease, moved: Tenant, *, raise_errors: bool = False) -> Tenant | None:
    """The source's drop by the holder of the tenant's lock, which it then releases; the tenant with its step
    cleared, or ``None`` when the drop failed (the step is left to recovery)."""
    started = time.perf_counter()
    try:
        done = await finish(ctx, lease.conn, moved)
        log.info("move source dropped", extra={"seconds": round(time.perf_counter() - started, 3)})
        return done
    except Exception as exc:
        log.warning("dropping the source of %s failed (recovery retries): %s", moved.id, exc)
        if raise_errors:
            raise
        return None
    finally:
        await lease.release()


async def _until_ready(ctx: Context, conn: Conn, tenant: Tenant, verifier: str) -> Tenant:
    """The move up to the tenant ready on the target (its role let in). A failure before the switch is undone; one
    after it (the target is the tenant's now) is left to recovery, which finishes it."""
    step = tenant.step or {}
    async with recorded(conn, tenant.id, "move", {"from": step.get("from"), "to": step.get("to")}):
        try:
            return await _run(ctx, conn, tenant, verifier)
        except Exception as exc:
            if isinstance(exc, ServiceError):
                log.warning("move of %s failed: %s", tenant.id, error_dict(exc))
            current = await _current(conn, tenant.id)
            if (current.step or {}).get("stage") != "cleanup":
                await undo(ctx, conn, current)
            raise


async def _current(conn: Conn, tenant_id: str) -> Tenant:
    found = await catalog.get(conn, tenant_id)
    assert found is not None
    return found


async def _run(ctx: Context, conn: Conn, tenant: Tenant, verifier: str) -> Tenant:
    step: dict[str, Any] = dict(tenant.step or {})
    source, target = ctx.target(tenant), ctx.servers.target(step["to"])
    database = tenant.database
    laps = _Laps()
    ctx.failpoint("move.after_record")
    source_major = await _check_target(source, target, database)
    laps("checks")
    step = await _record(conn, tenant.id, step, stage="target", target_role=True)
    async with target.admin() as admin:
        await roles.create(admin, database, verifier=verifier)
        step = await _record(conn, tenant.id, step, target_db=True)
        await copies.create_empty(admin, database)
    ctx.failpoint("move.after_target")
    laps("target")
    step = await _record(conn, tenant.id, step, stage="frozen")
    await ctx.connections.forget(tenant.server, database)
    async with source.admin() as admin:
        await copies.close(admin, database, role=database)
    ctx.failpoint("move.after_freeze")
    laps("freeze")
    step = await _record(conn, tenant.id, step, stage="copy")
    await _copy_and_verify(ctx, source, target, database, pgtools.for_server(source_major), laps)
    moved = await lifecycle.switch_server(conn, tenant.id, target.name, {**step, "stage": "cleanup"})
    laps("switch")
    ctx.failpoint("move.after_switch")
    async with target.admin() as admin:
        await copies.reopen(admin, database, role=database)
    laps("connect")
    log.info("move timings", extra={"laps": laps.laps})
    return moved


async def _check_target(source: Target, target: Target, database: str) -> int:
    """The source's major version, once the target is known to take its dump and to hold nothing of that name."""
    source_major, target_major = await copies.server_major(source), await copies.server_major(target)
    if target_major < source_major:
        raise MoveRefused(
            f"pg_dump cannot copy to an older PostgreSQL ({source_major} to {target_major})", server=target.name
        )
    async with target.admin() as admin:
        if await copies.exists(admin, database):
            raise DatabaseExists(database=database, server=target.name)
        if await roles.exists(admin, database):
            raise RoleExists(role=database, server=target.name)
    return source_major


async def _copy_and_verify(
    ctx: Context, source: Target, target: Target, database: str, tools: pgtools.Tools, laps: _Laps
) -> None:
    """The pipe, with the source's fingerprint read meanwhile (it is frozen); then grants, the schema check and the
    target's fingerprint at once. Not yet CONNECT: a write the role made on the target before the switch would be
    lost if the move were then undone; :func:`_run` grants it after the switch.

    The target's rows could be fingerprinted while its indexes are built (a second pipe for ``--section=post-data``):
    measured, it gains nothing, since adding a primary key takes an ``ACCESS EXCLUSIVE`` lock that waits for the
    fingerprint's scan of that table (bench/RESULTS.md)."""
    # One process on the source: it has the whole copy to finish in, and parallel workers would take CPU from the
    # pipe's own processes where they share a machine (measured in bench/RESULTS.md).
    source_print = asyncio.ensure_future(_fingerprint(ctx, source, database, workers=False))
    try:
        await pgtools.copy(tools, source.admin_dsn, database, target.admin_dsn, database)
        laps("copy")
        ctx.failpoint("move.after_copy")
        _, after = await asyncio.gather(_check(ctx, target, database), _fingerprint(ctx, target, database))
        before = await source_print
    finally:
        if not source_print.done():
            source_print.cancel()
        await asyncio.gather(source_print, return_exceptions=True)
    if before != after:
        differing = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        raise VerificationFailed("the copy's data differs from the source's", differing=differing)
    laps("verify")


async def _record(conn: Conn, tenant_id: str, step: dict[str, Any], **changes: Any) -> dict[str, Any]:
    step = {**step, **changes}
    await lifecycle.set_step(conn, tenant_id, step)
    return step


async def _fingerprint(ctx: Context, server: Target, database: str, *, workers: bool = True) -> dict[str, Any]:
    settings = ctx.server_settings() | ({} if workers else {"max_parallel_workers_per_gather": "0"})
    conn = await server.connect(database, server_settings=settings)
    try:
        return await copies.fingerprint(conn)
    finally:
        await conn.close()


async def _check(ctx: Context, target: Target, role: str) -> None:
    conn = await target.connect(role, server_settings=ctx.server_settings())
    try:
        await roles.grant_objects(conn, role)
        await copies.check_schema(ctx, conn, target.name)
    finally:
        await conn.close()


class _Laps:
    """Seconds per step of one move, for its log record (bench.move prints them)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


async def finish(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    """After the switch: let the role into its new database, drop the source's database and role, clear the step.
    Idempotent (recovery)."""
    step = tenant.step or {}
    async with ctx.target(tenant).admin() as admin:
        await copies.reopen(admin, tenant.database, role=tenant.database)
    source = ctx.servers.target(step["from"])
    await ctx.connections.forget(source.name, tenant.database)
    async with source.admin() as admin:
        await copies.drop(admin, tenant.database)
        if not await roles.drop(admin, tenant.database):
            log.warning("role %s on %s still holds privileges; left in place", tenant.database, source.name)
    ctx.failpoint("move.after_drop")
    done = await lifecycle.set_step(conn, tenant.id, None)
    log.info("tenant moved", extra={"server": done.server})
    return done


async def undo(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    """Before the switch: drop what the step says was made on the target, let the role into the source again."""
    step = tenant.step or {}
    target = ctx.servers.target(step["to"])
    async with target.admin() as admin:
        if step.get("target_db"):
            await copies.drop(admin, tenant.database)
        if step.get("target_role"):
            await roles.drop(admin, tenant.database)
    if step.get("stage") in ("frozen", "copy"):
        async with ctx.target(tenant).admin() as admin:
            await copies.reopen(admin, tenant.database, role=tenant.database)
    return await lifecycle.set_step(conn, tenant.id, None, "ready")


async def recover(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    if (tenant.step or {}).get("stage") == "cleanup":
        await finish(ctx, conn, tenant)
    else:
        await undo(ctx, conn, tenant)
