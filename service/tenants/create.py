"""Create a tenant: claim its row, place it, make its role and its database, run the whole history, seed it.

The route hands a :class:`CreateRequest` to :func:`create`, which walks the steps in order and never returns to a
hub between them: ``placement`` (server and catalog row), ``owned`` (role, then database, each recorded before it
is made), ``history.runner`` (every file and the seed, in as few transactions as PostgreSQL allows), then the
catalog row becomes ``ready``. A failure at any step undoes what the catalog records as made and marks the tenant
``failed`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from service import logs
from service.config import Strategy
from service.errors import DatabaseExists, DatabaseUnavailable, RoleExists, ServiceError, TenantDeleted, TenantExists
from service.history import runner
from service.history.migrations import plan
from service.identifiers import database_name, validate_tenant_id
from service.store import catalog
from service.store import queue as queue_store
from service.store.catalog import Tenant
from service.store.db import Conn, as_unavailable, is_lost
from service.tenants import credentials, owned, placement, roles
from service.tenants.context import Context
from service.tenants.steps import error_dict, locked, ms_since

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CreateRequest:
    id: str
    name: str | None = None
    seed: dict[str, str] = field(default_factory=dict)
    # How the schema is made (None: the TENANTS_STRATEGY setting); not part of the fingerprint, since a cloned
    # tenant is indistinguishable from a replayed one.
    strategy: Strategy | None = None
    # The server to place it on (None: the least loaded with room); not part of the fingerprint either: a replay
    # naming no server, or the one it is on, is the same request.
    server: str | None = None

    @property
    def display_name(self) -> str:
        return self.name if self.name is not None else self.id

    def fingerprint(self) -> str:
        """Identity of the request: the same id with the same body is a replay, anything else a conflict."""
        body = json.dumps({"name": self.display_name, "seed": self.seed}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


class Created(NamedTuple):
    """What :func:`create` did: ``connection_url`` (with the tenant role's password) only when it made the tenant;
    the password is kept nowhere, so this is the only time anyone sees it."""

    tenant: Tenant
    created: bool
    connection_url: str | None = None


async def create(ctx: Context, request: CreateRequest) -> Created:
    """Create a tenant and its login role, or return the existing tenant for a replay (no connection URL).

    (``Prefer: respond-async`` goes through :func:`.queue.enqueue` instead.) Raises TenantExists (same id, other
    body), DatabaseExists / RoleExists (a foreign database or role has the name; nothing is left behind),
    TenantBusy (waited past the bound), MigrationFailed (the tenant is then ``failed``, its database and role
    dropped), DatabaseUnavailable (a server went away: what was made is undone by recovery once it is back).
    """
    validate_tenant_id(request.id)
    logs.tenant.set(request.id)
    if request.server is not None:
        placement.require(ctx.servers, request.server)  # before waiting for anything
    async with locked(ctx, request.id) as lease:
        tenant = await _claim(ctx, lease.conn, request)
        if tenant.state in ("ready", "queued"):
            op = await catalog.begin_operation(lease.conn, tenant.id, "create", {"replay": True})
            await catalog.end_operation(lease.conn, op)
            return Created(tenant, False)
        strategy = request.strategy or ctx.settings.strategy
        op = await catalog.begin_operation(lease.conn, tenant.id, "create", {"strategy": strategy})
        password = await _guard(ctx, lease.conn, tenant, op, owned.create_role(ctx, lease.conn, tenant))
        dsn = ctx.target(tenant).admin_dsn
        url = credentials.connection_url(dsn, tenant.database, password, tenant.database)
        return Created(await _provision(ctx, lease.conn, tenant, request, op), True, url)


async def build_queued(
    ctx: Context, conn: Conn, tenant: Tenant, request: CreateRequest, op: int, verifier: str
) -> Tenant:
    """Build a tenant taken from the queue (its lock held on ``conn``, its row just made ``provisioning``): undo
    what an interrupted attempt left, refuse a foreign name, make the role with the verifier of the password the
    202 answered, then the same steps as :func:`create`.

    A lost server (DatabaseUnavailable) does not fail it: its client holds a 202, so the row stays
    ``provisioning`` and recovery undoes what it made and queues it again once the server answers."""
    await _guard(ctx, conn, tenant, op, _prepare_queued(ctx, conn, tenant, verifier), queued=True)
    return await _provision(ctx, conn, tenant, request, op, queued=True)


async def _prepare_queued(ctx: Context, conn: Conn, tenant: Tenant, verifier: str) -> None:
    await owned.drop_owned(ctx, conn, tenant)
    await _refuse_foreign(ctx, tenant)
    await owned.create_role_verified(ctx, conn, tenant, verifier)


async def _claim(ctx: Context, conn: Conn, request: CreateRequest) -> Tenant:
    existing = await catalog.get(conn, request.id)
    if existing is not None and existing.state == "deleted":
        raise TenantDeleted(tenant=request.id)
    if existing is not None and existing.state in ("ready", "queued"):
        if existing.request_sha256 == request.fingerprint() and request.server in (None, existing.server):
            return existing
        raise TenantExists(tenant=request.id)
    if existing is not None:
        # failed, or left in flight by a process that died: we hold the lock, so nobody works on it.
        await owned.drop_owned(ctx, conn, existing)
        await queue_store.dequeue(conn, request.id)  # a queued attempt's: this request replaces it
        if existing.state != "deleting":
            return await _place(ctx, conn, request, retry=True)  # it owns nothing now: placed anew
        await catalog.remove(conn, request.id)
    return await _place_new(ctx, conn, request)


async def _place_new(ctx: Context, conn: Conn, request: CreateRequest) -> Tenant:
    """Place a new tenant and check its name is free there. A server found down by that check is skipped by the
    next placement (see :mod:`.placement`): a request naming no server is placed again, once per server."""
    for attempt in range(len(ctx.servers), 0, -1):
        tenant = await _place(ctx, conn, request, retry=False)
        try:
            await _refuse_foreign(ctx, tenant)
            return tenant
        except Exception as exc:
            if is_lost(conn):  # so is the lock: recovery fails the row (it owns nothing)
                raise
            await catalog.remove(conn, tenant.id)
            if attempt == 1 or request.server is not None or as_unavailable(exc) is None:
                raise
            log.warning("server %s is down: placing tenant %s again", tenant.server, tenant.id)
    raise AssertionError("unreachable: the last attempt raises")


async def _place(ctx: Context, conn: Conn, request: CreateRequest, *, retry: bool) -> Tenant:
    """Choose the tenant's server and write its row in one catalog transaction (see :mod:`.placement`).

    Raises UnknownServer, ServerFull, NoCapacity.
    """
    name, fingerprint = request.display_name, request.fingerprint()
    down = await placement.unreachable(ctx.servers) if request.server is None else frozenset()
    async with conn.transaction():
        server = (await placement.place(conn, ctx.servers, request.id, request.server, down)).name
        if retry:
            return await catalog.restart(conn, request.id, name, fingerprint, server=server)
        database = database_name(ctx.settings.db_prefix, request.id)
        return await catalog.insert(conn, request.id, name, database, fingerprint, server=server)


async def _refuse_foreign(ctx: Context, tenant: Tenant) -> None:
    """DatabaseExists / RoleExists when something the service did not make has the tenant's name there."""
    target = ctx.target(tenant)
    if await target.database_exists(tenant.database):
        raise DatabaseExists(database=tenant.database, server=target.name)
    async with target.admin() as admin:
        if await roles.exists(admin, tenant.database):
            raise RoleExists(role=tenant.database, server=target.name)


async def _provision(
    ctx: Context, conn: Conn, tenant: Tenant, request: CreateRequest, op: int, *, queued: bool = False
) -> Tenant:
    ready = await _guard(ctx, conn, tenant, op, _build(ctx, conn, tenant, request), queued=queued)
    await catalog.end_operation(conn, op)
    return ready


async def _build(ctx: Context, conn: Conn, tenant: Tenant, request: CreateRequest) -> Tenant:
    started = time.perf_counter()
    clone = (request.strategy or ctx.settings.strategy) == "clone"
    target = ctx.target(tenant)
    await owned.create_database(ctx, conn, tenant, ctx.templates[target.name] if clone else None)
    async with target.admin() as admin:
        await roles.grant_connect(admin, tenant.database, tenant.database)
    tconn = await ctx.connect(tenant)
    try:
        values = runner.SeedValues(tenant.id, request.display_name, dict(request.seed))
        if clone:  # the schema and its history came with the template: mark them cloned, seed
            await runner.seed_cloned(tconn, ctx.migrations.seeds, values)
        else:
            batches = plan(ctx.migrations.migrations, seed=True)
            await runner.apply(tconn, batches, seeds=ctx.migrations.seeds, values=values)
        await roles.grant_objects(tconn, tenant.database)
    finally:
        await tconn.close()
    ctx.failpoint("create.before_ready")
    ready = await catalog.mark(conn, tenant.id, "ready", version=ctx.migrations.latest_version)
    log.info("tenant ready", extra={"version": ready.version, "duration_ms": ms_since(started)})
    return ready


async def _guard(ctx: Context, conn: Conn, tenant: Tenant, op: int, step: Awaitable[_T], *, queued: bool = False) -> _T:
    """Await one step of a creation; on failure undo what the catalog records as made, and record why.

    A name taken by a foreign database or role leaves nothing behind, not even the catalog row. When the catalog
    connection was lost, the tenant's lock went with it and nothing is touched; when the undo cannot reach a
    server, it stops there. Either way the row stays ``provisioning`` with what it owns recorded, the recovery loop
    (:mod:`.recover`) undoes it under the lock once the servers answer again, and the caller gets
    DatabaseUnavailable (503) for a lost server or connection. A ``queued`` creation is not undone for a lost
    server at all: recovery queues it again (see :func:`build_queued`).
    """
    try:
        return await step
    except Exception as exc:
        if is_lost(conn):  # so is the lock: touch nothing
            lost = DatabaseUnavailable("the catalog connection was lost")
            log.warning("creation of %s interrupted (%s); recovery undoes it", tenant.id, lost.message)
            raise lost from exc
        unavailable = as_unavailable(exc)
        if not (queued and unavailable is not None):
            try:
                await _undo(ctx, conn, tenant, op, exc)
            except Exception as again:
                stopped = as_unavailable(again)
                if stopped is None:
                    raise
                log.warning("creation of %s interrupted (%s); recovery undoes it", tenant.id, stopped.message)
        if unavailable is None or unavailable is exc:
            raise
        raise unavailable from exc


async def _undo(ctx: Context, conn: Conn, tenant: Tenant, op: int, exc: Exception) -> None:
    if isinstance(exc, DatabaseExists | RoleExists):
        await owned.drop_owned(ctx, conn, tenant)
        await catalog.remove(conn, tenant.id)
        await catalog.end_operation(conn, op, {"code": exc.code})
        return
    if isinstance(exc, ServiceError):
        error = error_dict(exc)
    else:
        error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
    await owned.fail(ctx, conn, tenant, error)
    await catalog.end_operation(conn, op, error)
