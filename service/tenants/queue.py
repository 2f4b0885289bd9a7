"""The creation queue: ``POST /tenants`` with ``Prefer: respond-async`` records the request and answers ``202`` at
once; workers in every replica build queued tenants, oldest first.

The queue lives in the catalog: a ``queued`` tenant row and its ``create_queue`` row, written in one transaction
with the placement, so a request is either recorded and queued or not at all, and it survives restarts and is seen
by every replica. The 202 carries the role's password, which is stored nowhere: the queue keeps the password's
SCRAM verifier (what ``pg_authid`` would keep) and the worker makes the role with it, so answering costs one catalog
transaction and no connection to the tenant's server, whatever the backlog.

A worker claims a tenant by taking its lock (the advisory lock every tenant operation takes, on a catalog
connection, which dies with the process): two replicas never build one tenant, and a dead worker's tenant is taken
again by recovery (:mod:`.recover` puts it back in the queue). ``FOR UPDATE SKIP LOCKED`` would have to keep a
transaction open for the whole build to mean the same.

Why not procrastinate (evaluated first): it has no asyncpg connector, so its job could not be written in the
catalog transaction that records the tenant (a crash between the two would strand one or the other), and each
replica would hold a second pool (psycopg) plus a listening connection against the same connection budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import replace
from typing import Any

from service import logs
from service.errors import DatabaseUnavailable, ServiceError, TenantBusy, TenantDeleted, TenantExists
from service.identifiers import database_name, validate_tenant_id
from service.store import catalog
from service.store import queue as queue_store
from service.store.catalog import Tenant
from service.store.db import Conn, as_unavailable
from service.store.locks import Lease, try_tenant_xact_lock
from service.store.queue import Job
from service.tenants import create, credentials, placement
from service.tenants.context import Context
from service.tenants.create import Created, CreateRequest

log = logging.getLogger(__name__)

# Queued tenants a worker looks at for one whose lock is free (others are being started by other workers).
_CANDIDATES = 16


async def enqueue(ctx: Context, request: CreateRequest) -> Created:
    """Record the request and queue it; return the tenant ``queued`` with its connection URL (the role is made with
    that password when a worker starts it). A replay (same body) returns the tenant as it is, without URL.

    Raises TenantExists (same id, other body), TenantDeleted, TenantBusy (an operation holds it), UnknownServer,
    ServerFull, NoCapacity, DatabaseUnavailable.
    """
    validate_tenant_id(request.id)
    logs.tenant.set(request.id)
    if request.server is not None:
        placement.require(ctx.servers, request.server)
    password = credentials.new_password()
    # PBKDF2 (4096 rounds) is most of the CPU of an enqueue: hashlib runs it without the GIL, so a thread keeps the
    # event loop answering other requests meanwhile.
    verifier = await asyncio.to_thread(credentials.scram_sha256, password)
    down = await placement.unreachable(ctx.servers) if request.server is None else frozenset()
    async with ctx.server.catalog() as conn:
        tenant, created = await _record_new(ctx, conn, request, verifier), True
        if tenant is None:
            async with conn.transaction():
                tenant, created = await _record(ctx, conn, request, verifier, down)
    if not created:
        return Created(tenant, False)
    ctx.queue_wakeup.set()
    dsn = ctx.target(tenant).admin_dsn
    return Created(tenant, True, credentials.connection_url(dsn, tenant.database, password, tenant.database))


async def _record_new(ctx: Context, conn: Conn, request: CreateRequest, verifier: str) -> Tenant | None:
    """The usual case in one statement: a new id, and a server known without counting (named, or the only one,
    without capacity). None: take the general path."""
    servers = ctx.servers
    if request.server is None and (len(servers) > 1 or servers.first.capacity is not None):
        return None
    server = request.server or servers.first.name
    if servers.target(server).capacity is not None:
        return None
    database = database_name(ctx.settings.db_prefix, request.id)
    return await queue_store.enqueue_new(
        conn, request.id, request.display_name, database, request.fingerprint(), server, _job(request), verifier
    )


def _job(request: CreateRequest) -> dict[str, Any]:
    return {"name": request.name, "seed": request.seed, "strategy": request.strategy}


async def _record(
    ctx: Context, conn: Conn, request: CreateRequest, verifier: str, down: frozenset[str]
) -> tuple[Tenant, bool]:
    """In the caller's transaction: the tenant row (new, or a failed one again) and its queue entry."""
    free = await try_tenant_xact_lock(conn, request.id)
    existing = await catalog.get(conn, request.id)
    if existing is not None and existing.state != "failed":
        same = existing.request_sha256 == request.fingerprint() and request.server in (None, existing.server)
        if existing.state == "deleted":
            raise TenantDeleted(tenant=request.id)
        if existing.state not in ("ready", "queued", "provisioning"):  # deleting, restoring, moving
            raise TenantBusy(tenant=request.id)
        if not same:
            raise TenantExists(tenant=request.id)
        return existing, False
    if not free:
        raise TenantBusy(tenant=request.id)
    name, fingerprint = request.display_name, request.fingerprint()
    if existing is not None:
        # A failed tenant that still owns something stays on its server: the worker drops it there first.
        keep = existing.database_owned or existing.role_owned
        named = existing.server if keep else request.server
        server = (await placement.place(conn, ctx.servers, request.id, named, down)).name
        tenant = await catalog.restart(conn, request.id, name, fingerprint, server=server)
    else:
        server = (await placement.place(conn, ctx.servers, request.id, request.server, down)).name
        database = database_name(ctx.settings.db_prefix, request.id)
        tenant = await catalog.insert(conn, request.id, name, database, fingerprint, server=server)
    await queue_store.enqueue(conn, request.id, _job(request), verifier)
    await queue_store.requeue(conn, request.id)  # provisioning → queued, in this transaction
    return replace(tenant, state="queued"), True


async def work(ctx: Context) -> None:
    """One worker, for the life of the process: build the oldest queued tenant whose lock is free, else wait for
    an enqueue here or the poll interval (another replica's enqueue)."""
    while True:
        try:
            busy = await _one(ctx)
        except ServiceError as exc:  # the catalog is down: look again later
            log.warning("creation queue: %s", exc.message)
            busy = False
        except Exception as exc:  # a worker must outlive any one tenant's failure
            unavailable = as_unavailable(exc)
            if unavailable is None:
                log.exception("creation queue: unexpected error")
            else:
                log.warning("creation queue: %s", unavailable.message)
            busy = False
        if not busy:
            try:
                async with asyncio.timeout(ctx.settings.queue_poll_interval):
                    await ctx.queue_wakeup.wait()
            except TimeoutError:
                pass
            ctx.queue_wakeup.clear()


async def _one(ctx: Context) -> bool:
    """Build one queued tenant; False when none was free to take."""
    async with ctx.locks.slot():
        async with ctx.server.catalog() as conn:
            candidates = await queue_store.next_queued(conn, _CANDIDATES)
        for tenant_id in candidates:
            lease = await ctx.locks.try_acquire(tenant_id)
            if lease is None:
                continue
            try:
                if await _start(ctx, lease, tenant_id):
                    return True
            finally:
                await lease.release()
    return False


async def _start(ctx: Context, lease: Lease, tenant_id: str) -> bool:
    """Build the tenant if it is still queued (another worker may have built it since it was listed)."""
    logs.tenant.set(tenant_id)
    conn = lease.conn
    tenant, job = await catalog.get(conn, tenant_id), await queue_store.job(conn, tenant_id)
    if tenant is None or job is None or tenant.state != "queued":
        return False
    if not await ctx.target(tenant).reachable():  # its server is down: left queued, no attempt spent
        return False
    request = _request(tenant, job)
    strategy = request.strategy or ctx.settings.strategy
    detail = {"strategy": strategy, "queued": True, "attempt": job.attempts + 1, "worker": _worker()}
    op = await catalog.begin_operation(conn, tenant_id, "create", detail)
    tenant = await queue_store.start_job(conn, tenant_id)
    try:
        await create.build_queued(ctx, conn, tenant, request, op, job.role_verifier)
    except DatabaseUnavailable as exc:  # left provisioning: recovery queues it again once the server is back
        log.warning("queued creation of %s interrupted: %s", tenant_id, exc.message)
        return True
    except ServiceError as exc:  # failed, and what it made is dropped: the verifier goes too
        log.warning("queued creation of %s failed: %s", tenant_id, exc.message)
    await queue_store.dequeue(conn, tenant_id)
    return True


def _worker() -> str:
    """Which replica built a queued tenant (its audit trail shows it): host and process."""
    return f"{socket.gethostname()}/{os.getpid()}"


def _request(tenant: Tenant, job: Job) -> CreateRequest:
    values = job.request
    return CreateRequest(
        id=tenant.id, name=values.get("name"), seed=dict(values.get("seed") or {}), strategy=values.get("strategy")
    )
