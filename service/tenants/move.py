"""Move a tenant to another server without losing a committed write.

Steps, each recorded in ``tenants.step`` before it touches a server (state ``moving``):

1. ``target``: the tenant's role is made on the target with the source's SCRAM verifier (the same password logs
   in there), then an empty database of the same name.
2. ``frozen``: writes stop on the source: the role's ``CONNECT`` is revoked and its sessions are ended, and the
   step waits until they are gone, so every transaction that committed is in what ``pg_dump`` reads next. Clients
   get a clear error (terminated session, then ``permission denied for database``), never a write that is lost.
3. ``copy``: ``pg_dump | pg_restore`` (PostgreSQL's own tools), then the role's grants on the copy.
4. verify: the copy's history and schema (against the expected schema at its level) and, per table, the row count
   and a checksum, plus every sequence, equal the source's; else ``verification_failed`` and the move is undone.
5. switch: one catalog statement puts the tenant on the target, ready (the commit point).
6. ``cleanup``: the role gets ``CONNECT`` on the target (not before the switch: a write acknowledged there and then
   undone would be lost), and the source's database and role are dropped, only now.

Recovery undoes a move that had not switched (drops what the step says was made on the target, gives the role its
``CONNECT`` back on the source) and finishes one that had (drops the source's database and role).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from service.errors import (
    DatabaseExists,
    MoveRefused,
    RoleExists,
    ServiceError,
    VerificationFailed,
)
from service.identifiers import quote_ident, quote_literal, validate_tenant_id
from service.store import catalog, lifecycle, pgtools
from service.store.catalog import Tenant
from service.store.db import Conn, PostgresError, Target
from service.store.locks import Lease
from service.tenants import copies, placement, roles
from service.tenants.context import Context
from service.tenants.steps import error_dict, ready, recorded

log = logging.getLogger(__name__)

_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


async def move(ctx: Context, tenant_id: str, server: str, *, wait: bool = False) -> Tenant:
    """Start moving a ready tenant to ``server``; return it ``moving`` (``wait``: return it moved, ready).

    Raises UnknownServer, ServerFull, ServerDraining, MoveRefused (already there, or an adopted database),
    TenantNotFound, TenantNotReady, TenantBusy; with ``wait`` also what the move raises (VerificationFailed,
    ToolFailed, DatabaseUnavailable): the tenant is then back on its server, ready.
    """
    validate_tenant_id(tenant_id)
    placement.require(ctx.servers, server)
    lease = await ctx.locks.acquire(tenant_id)
    try:
        tenant = await _start(ctx, lease.conn, tenant_id, server)
    except BaseException:
        await lease.release()
        raise
    if wait:
        try:
            return await _run_recorded(ctx, lease.conn, tenant)
        finally:
            await lease.release()
    ctx.spawn(_in_background(ctx, lease, tenant))
    return tenant


async def _start(ctx: Context, conn: Conn, tenant_id: str, server: str) -> Tenant:
    tenant = await ready(conn, tenant_id)
    if tenant.server == server:
        raise MoveRefused("the tenant is already on this server", tenant=tenant_id, server=server)
    if not (tenant.database_owned and tenant.role_owned):
        raise MoveRefused("an adopted tenant's database is not the service's to move", tenant=tenant_id)
    counts = await catalog.count_by_server(conn)
    placement.choose(ctx.servers, counts, server, await lifecycle.draining(conn))  # ServerDraining, ServerFull
    step = {"op": "move", "stage": "start", "from": tenant.server, "to": server}
    return await lifecycle.set_step(conn, tenant_id, step, "moving")


async def _in_background(ctx: Context, lease: Lease, tenant: Tenant) -> None:
    try:
        await _run_recorded(ctx, lease.conn, tenant)
    except ServiceError as exc:
        log.warning("moving %s failed: %s", tenant.id, exc.message)
    except Exception:
        log.exception("moving %s failed", tenant.id)
    finally:
        await lease.release()


async def _run_recorded(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    step = tenant.step or {}
    async with recorded(conn, tenant.id, "move", {"from": step.get("from"), "to": step.get("to")}):
        try:
            return await _run(ctx, conn, tenant)
        except ServiceError as exc:
            log.warning("move of %s undone: %s", tenant.id, error_dict(exc))
            await undo(ctx, conn, await _current(conn, tenant.id))
            raise
        except Exception:
            await undo(ctx, conn, await _current(conn, tenant.id))
            raise


async def _current(conn: Conn, tenant_id: str) -> Tenant:
    found = await catalog.get(conn, tenant_id)
    assert found is not None
    return found


async def _run(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    step: dict[str, Any] = dict(tenant.step or {})
    source, target = ctx.target(tenant), ctx.servers.target(step["to"])
    role = database = tenant.database
    ctx.failpoint("move.after_record")
    source_major, target_major = await copies.server_major(source), await copies.server_major(target)
    if target_major < source_major:
        raise MoveRefused(
            f"pg_dump cannot copy to an older PostgreSQL ({source_major} to {target_major})",
            server=target.name,
        )
    verifier = await _verifier(source, role)
    async with target.admin() as admin:
        if await copies.exists(admin, database):
            raise DatabaseExists(database=database, server=target.name)
        if await roles.exists(admin, role):
            raise RoleExists(role=role, server=target.name)
    step = await _record(conn, tenant.id, step, stage="target", target_role=True)
    async with target.admin() as admin:
        await admin.execute(f"CREATE ROLE {quote_ident(role)} {_ATTRIBUTES} PASSWORD {quote_literal(verifier)}")
        step = await _record(conn, tenant.id, step, target_db=True)
        await copies.create_empty(admin, database)
    ctx.failpoint("move.after_target")
    step = await _record(conn, tenant.id, step, stage="frozen")
    await ctx.connections.forget(tenant.server, database)
    async with source.admin() as admin:
        await copies.close(admin, database, role=role)
    ctx.failpoint("move.after_freeze")
    step = await _record(conn, tenant.id, step, stage="copy")
    # The source's own major: the pg_dump that knows that server (a distribution's patches included), and a
    # pg_restore that writes to a newer server as well as to its own.
    tools = pgtools.for_server(source_major)
    # The source is frozen: its fingerprint is read while pg_dump reads it, not after the copy.
    source_print = asyncio.create_task(_fingerprint(ctx, source, role))
    started = time.perf_counter()
    try:
        await pgtools.copy(tools, source.admin_dsn, database, target.admin_dsn, database)
        copied = time.perf_counter()
        ctx.failpoint("move.after_copy")
        await _grant_and_verify(ctx, target, role, source_print)
        timings = {"copy_s": round(copied - started, 2), "verify_s": round(time.perf_counter() - copied, 2)}
        log.info("move copied and verified", extra=timings)
    finally:
        if not source_print.done():
            source_print.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await source_print
    moved = await lifecycle.switch_server(conn, tenant.id, target.name, {**step, "stage": "cleanup"})
    ctx.failpoint("move.after_switch")
    return await finish(ctx, conn, moved)


async def _record(conn: Conn, tenant_id: str, step: dict[str, Any], **changes: Any) -> dict[str, Any]:
    step = {**step, **changes}
    await lifecycle.set_step(conn, tenant_id, step)
    return step


async def _verifier(source: Target, role: str) -> str:
    """The role's password verifier on the source (reading it needs a superuser, or pg_read_all_data's peers)."""
    try:
        async with source.admin() as admin:
            found = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    except PostgresError as exc:
        raise MoveRefused(
            "the admin role cannot read the tenant role's password verifier (pg_authid needs a superuser)",
            role=role,
        ) from exc
    if not found:
        raise MoveRefused("the tenant's role has no password to carry over", role=role)
    return str(found)


async def _fingerprint(ctx: Context, server: Target, database: str) -> dict[str, Any]:
    conn = await server.connect(database, server_settings=ctx.server_settings())
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


async def _grant_and_verify(
    ctx: Context, target: Target, role: str, source_print: asyncio.Task[dict[str, Any]]
) -> None:
    """Grants inside the copy, then the checks (schema and data at once). Not yet CONNECT: a write the role made on
    the target before the switch would be lost if the move were then undone; :func:`finish` grants it."""
    _, after = await asyncio.gather(_check(ctx, target, role), _fingerprint(ctx, target, role))
    before = await source_print
    if before != after:
        differing = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        raise VerificationFailed("the copy's data differs from the source's", differing=differing)


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
