"""Tenant lifecycle: create (database → full chain → seed → ready), migrate, delete, and recovery at start.

Every step that cannot run in a transaction is recorded in the catalog before it runs: ``role_owned`` is set just
before ``CREATE ROLE`` (the tenant's own login role, see :mod:`service.roles`), ``database_owned`` just before
``CREATE DATABASE``, the state becomes ``deleting`` before ``DROP DATABASE``. Whoever next holds the
tenant's lock (a retry, or :meth:`Provisioner.recover` at start) finishes or undoes what was in flight, and never
drops a database or a role the catalog did not record as its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import asyncpg

from service import catalog, credentials, history, logs, roles, runner
from service.cache import Recent, Revalidating
from service.catalog import Tenant
from service.config import Settings, Strategy
from service.connections import TenantConnections
from service.db import (
    DUPLICATE_DATABASE,
    INVALID_CATALOG_NAME,
    UNIQUE_VIOLATION,
    Conn,
    Lease,
    Server,
    Servers,
    Target,
    TenantLocks,
    sqlstate,
)
from service.drift import DriftChecker, DriftReport
from service.errors import (
    ConfirmationRequired,
    DatabaseExists,
    HistoryMismatch,
    MigrationFailed,
    OutOfOrder,
    RoleExists,
    ServiceError,
    TenantExists,
    TenantNotFound,
    TenantNotReady,
)
from service.identifiers import database_name, quote_ident, validate_tenant_id
from service.migrations import Migration, MigrationSet, plan
from service.repair import Accept, repairs_for
from service.servers import place, require
from service.status import SchemaStatus, compute
from service.template import Template

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What a migration run did to one tenant: the version before and after, whether anything was pending, and
    the failure that stopped it, if any (the version is then the last one committed)."""

    from_version: int | None
    version: int | None
    ran: bool
    failure: MigrationFailed | None = None

    @property
    def error(self) -> dict[str, Any] | None:
        return None if self.failure is None else error_dict(self.failure)


async def _ready(conn: Conn, tenant_id: str) -> Tenant:
    """The tenant, read under its lock; TenantNotFound, or TenantNotReady unless it is ``ready``."""
    return require_ready(tenant_id, await catalog.get(conn, tenant_id))


def require_ready(tenant_id: str, tenant: Tenant | None) -> Tenant:
    if tenant is None:
        raise TenantNotFound(tenant=tenant_id)
    if tenant.state != "ready":
        raise TenantNotReady(f"tenant is {tenant.state}", tenant=tenant_id, state=tenant.state)
    return tenant


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# Tenants whose history is kept in memory when schema_cache_seconds > 0 (a few kB each).
_LEVELS_KEPT = 20_000
_History = list[history.Applied]
# Tenant databases read at once when a list is filtered by schema status.
_STATUS_READS = 8


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
    """What :meth:`Provisioner.create` did: ``connection_url`` (with the tenant role's password) only when it made
    the tenant; the password is kept nowhere, so this is the only time anyone sees it."""

    tenant: Tenant
    created: bool
    connection_url: str | None = None


_T = TypeVar("_T")


def error_dict(exc: ServiceError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, **exc.details}


class Provisioner:
    """The domain core behind the HTTP API and the CLI; it gets its servers, files and settings as arguments.

    ``servers`` may be the catalog's :class:`Server` alone: the tenant servers then come from the settings.
    """

    def __init__(self, servers: Servers | Server, migrations: MigrationSet, settings: Settings) -> None:
        if isinstance(servers, Server):
            servers = Servers.configure(servers, settings.server_specs, settings.max_parallel + 1)
        self.servers = servers
        self.server = servers.catalog  # the catalog, and the locks
        self.migrations = migrations
        self.settings = settings
        self.locks = TenantLocks(self.server, settings.busy_timeout, settings.max_parallel)
        self._background: set[asyncio.Task[None]] = set()
        self._fleet = Recent(self._count_fleet, settings.fleet_cache_seconds)
        self.connections = TenantConnections(settings.tenant_connections)
        # Tenants' applied histories for status reads, when allowed to be a little old (schema_cache_seconds).
        self._levels: Revalidating[_History] | None = None
        if settings.schema_cache_seconds > 0:
            self._levels = Revalidating(settings.schema_cache_seconds, _LEVELS_KEPT)
        self.drift = DriftChecker(servers, migrations, settings, self.locks, self.connections)
        # The clone strategy's template database on each server, built on first use (service.template).
        self.templates = {t.name: self._template_on(t) for t in servers}

    def _template_on(self, target: Target) -> Template:
        catalog_database = self.settings.catalog_database
        return Template(
            target.connect,
            self.migrations,
            self.drift.expected_for(target.name),
            catalog_database=catalog_database,
            admin_database=target.maintenance_database,
            lock_connect=lambda: self.server.connect(catalog_database),
            server_key=target.name,
            server_settings=self._server_settings(),
            failpoint=self._failpoint,
        )

    @property
    def template(self) -> Template:
        """The template of the first server (the only one unless several are configured)."""
        return self.templates[self.servers.first.name]

    def _target(self, tenant: Tenant) -> Target:
        """The server the tenant lives on; DatabaseUnavailable when it is no longer configured."""
        return self.servers.target(tenant.server)

    # -- create ---------------------------------------------------------------------------------------------

    async def create(self, request: CreateRequest, *, wait: bool = True) -> Created:
        """Create a tenant and its login role, or return the existing tenant for a replay (no connection URL).

        With ``wait=False`` the role is made before returning (so the URL is in the answer), the tenant is returned
        in ``provisioning`` and the database is built in the background. Raises TenantExists (same id, other body),
        DatabaseExists / RoleExists (a foreign database or role has the name; nothing is left behind), TenantBusy
        (waited past the bound), MigrationFailed (the tenant is then ``failed``, its database and role dropped).
        """
        validate_tenant_id(request.id)
        logs.tenant.set(request.id)
        if request.server is not None:
            require(self.servers, request.server)  # before waiting for anything
        lease: Lease | None = await self.locks.acquire(request.id)
        assert lease is not None
        try:
            tenant = await self._claim(lease.conn, request)
            if tenant.state == "ready":
                op = await catalog.begin_operation(lease.conn, tenant.id, "create", {"replay": True})
                await catalog.end_operation(lease.conn, op)
                return Created(tenant, False)
            strategy = request.strategy or self.settings.strategy
            op = await catalog.begin_operation(lease.conn, tenant.id, "create", {"strategy": strategy})
            password = await self._guard(lease.conn, tenant, op, self._create_role(lease.conn, tenant))
            dsn = self._target(tenant).admin_dsn
            url = credentials.connection_url(dsn, tenant.database, password, tenant.database)
            if not wait:
                self._spawn(self._provision_and_release(lease, tenant, request, op))
                lease = None
                return Created(tenant, True, url)
            return Created(await self._provision(lease.conn, tenant, request, op), True, url)
        finally:
            if lease is not None:
                await lease.release()

    async def _claim(self, conn: Conn, request: CreateRequest) -> Tenant:
        existing = await catalog.get(conn, request.id)
        if existing is not None and existing.state == "ready":
            if existing.request_sha256 == request.fingerprint() and request.server in (None, existing.server):
                return existing
            raise TenantExists(tenant=request.id)
        if existing is not None:
            # failed, or left in flight by a process that died: we hold the lock, so nobody works on it.
            await self._drop_owned(conn, existing)
            if existing.state != "deleting":
                return await self._place(conn, request, retry=True)  # it owns nothing now: placed anew
            await catalog.remove(conn, request.id)
        tenant = await self._place(conn, request, retry=False)
        try:
            await self._refuse_foreign(tenant)
        except Exception:
            await catalog.remove(conn, tenant.id)
            raise
        return tenant

    async def _place(self, conn: Conn, request: CreateRequest, *, retry: bool) -> Tenant:
        """Choose the tenant's server and write its row in one catalog transaction (see :mod:`service.servers`).

        Raises UnknownServer, ServerFull, NoCapacity.
        """
        name, fingerprint = request.display_name, request.fingerprint()
        async with conn.transaction():
            server = (await place(conn, self.servers, request.id, request.server)).name
            if retry:
                return await catalog.restart(conn, request.id, name, fingerprint, server=server)
            database = database_name(self.settings.db_prefix, request.id)
            return await catalog.insert(conn, request.id, name, database, fingerprint, server=server)

    async def _refuse_foreign(self, tenant: Tenant) -> None:
        """DatabaseExists / RoleExists when something the service did not make has the tenant's name there."""
        target = self._target(tenant)
        if await target.database_exists(tenant.database):
            raise DatabaseExists(database=tenant.database, server=target.name)
        async with target.admin() as admin:
            if await roles.exists(admin, tenant.database):
                raise RoleExists(role=tenant.database, server=target.name)

    async def _provision_and_release(self, lease: Lease, tenant: Tenant, request: CreateRequest, op: int) -> None:
        try:
            await self._provision(lease.conn, tenant, request, op)
        except ServiceError as exc:
            log.warning("background creation of %s failed: %s", tenant.id, exc.message)
        finally:
            await lease.release()

    async def _provision(self, conn: Conn, tenant: Tenant, request: CreateRequest, op: int) -> Tenant:
        ready = await self._guard(conn, tenant, op, self._build(conn, tenant, request))
        await catalog.end_operation(conn, op)
        return ready

    async def _build(self, conn: Conn, tenant: Tenant, request: CreateRequest) -> Tenant:
        started = time.perf_counter()
        clone = (request.strategy or self.settings.strategy) == "clone"
        target = self._target(tenant)
        await self._create_database(conn, tenant, self.templates[target.name] if clone else None)
        async with target.admin() as admin:
            await roles.grant_connect(admin, tenant.database, tenant.database)
        tconn = await self._connect(tenant)
        try:
            values = runner.SeedValues(tenant.id, request.display_name, dict(request.seed))
            if clone:  # the schema and its history came with the template: mark them cloned, seed
                await runner.seed_cloned(tconn, self.migrations.seeds, values)
            else:
                batches = plan(self.migrations.migrations, seed=True)
                await runner.apply(tconn, batches, seeds=self.migrations.seeds, values=values)
            await roles.grant_objects(tconn, tenant.database)
        finally:
            await tconn.close()
        self._failpoint("create.before_ready")
        ready = await catalog.mark(conn, tenant.id, "ready", version=self.migrations.latest_version)
        log.info("tenant ready", extra={"version": ready.version, "duration_ms": _ms_since(started)})
        return ready

    async def _guard(self, conn: Conn, tenant: Tenant, op: int, step: Awaitable[_T]) -> _T:
        """Await one step of a creation; on failure undo what the catalog records as made, and record why.

        A name taken by a foreign database or role leaves nothing behind, not even the catalog row.
        """
        try:
            return await step
        except (DatabaseExists, RoleExists) as exc:
            await self._drop_owned(conn, tenant)
            await catalog.remove(conn, tenant.id)
            await catalog.end_operation(conn, op, {"code": exc.code})
            raise
        except ServiceError as exc:
            await self._fail(conn, tenant, error_dict(exc))
            await catalog.end_operation(conn, op, error_dict(exc))
            raise
        except Exception as exc:
            error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            await self._fail(conn, tenant, error)
            await catalog.end_operation(conn, op, error)
            raise

    async def _create_role(self, conn: Conn, tenant: Tenant) -> str:
        """Make the tenant's login role (named like its database); return its password."""
        password = credentials.new_password()
        await catalog.set_role_owned(conn, tenant.id, True)
        try:
            async with self._target(tenant).admin() as admin:
                await roles.create(admin, tenant.database, password)
        except RoleExists:  # someone outside the service made it a moment ago
            await catalog.set_role_owned(conn, tenant.id, False)
            raise
        return password

    async def _create_database(self, conn: Conn, tenant: Tenant, template: Template | None = None) -> None:
        """An empty database from template0, or with ``template`` a copy of that migration set's template."""
        await catalog.set_owned(conn, tenant.id, True)
        try:
            self._failpoint("create.after_owned")
            async with self._target(tenant).admin() as admin:
                if template is not None:
                    await template.create_database(admin, tenant.database)
                else:
                    await admin.execute(f"CREATE DATABASE {quote_ident(tenant.database)} TEMPLATE template0")
            self._failpoint("create.after_database")
        except asyncpg.PostgresError as exc:
            if sqlstate(exc) in (DUPLICATE_DATABASE, UNIQUE_VIOLATION):  # someone outside made it a moment ago
                await catalog.set_owned(conn, tenant.id, False)
                raise DatabaseExists(database=tenant.database) from exc
            raise

    def _failpoint(self, name: str) -> None:
        """Test-only: die here, as a crash would, when TENANTS_FAILPOINT names this step."""
        if self.settings.failpoint == name:
            log.error("failpoint %s: killing the process", name)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _connect(self, tenant: Tenant) -> asyncpg.Connection:
        """A new connection to the tenant's database, for work that changes it (reads use ``self.connections``)."""
        return await self._target(tenant).connect(tenant.database, server_settings=self._server_settings())

    def _server_settings(self) -> dict[str, str]:
        """Session settings of a connection that runs migrations."""
        settings: dict[str, str] = {}
        if self.settings.statement_timeout:
            settings["statement_timeout"] = str(int(self.settings.statement_timeout * 1000))
        return settings

    async def _fail(self, conn: Conn, tenant: Tenant, error: dict[str, Any]) -> None:
        """Drop what a failed creation made and record why; a new tenant is all or nothing."""
        await self._drop_owned(conn, tenant)
        await catalog.mark(conn, tenant.id, "failed", error=error)

    async def _drop_owned(self, conn: Conn, tenant: Tenant) -> None:
        # Re-read: the flag is set during the operation, so the caller's snapshot may predate it.
        current = await catalog.get(conn, tenant.id)
        if current is None:
            return
        if current.database_owned:
            await self.connections.forget(current.server, current.database)
            async with self._target(current).admin() as admin:
                await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(current.database)} WITH (FORCE)")
            await catalog.set_owned(conn, tenant.id, False)
        if current.role_owned:
            await self._drop_role(conn, current)

    async def _drop_role(self, conn: Conn, tenant: Tenant) -> None:
        """Drop the tenant's role; first revoke its privileges in a database that stays (one not ours)."""
        target = self._target(tenant)
        async with target.admin() as admin:
            dropped = await roles.drop(admin, tenant.database)
        if not dropped:
            tconn = await self._connect(tenant)
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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel background work (what it left in flight is finished or undone by :meth:`recover`), then close the
        kept tenant connections and the servers' admin pools."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._levels is not None:
            await self._levels.close()
        await self.connections.close()
        await self.servers.close()

    # -- read -----------------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the catalog answers within a few seconds."""
        async with self.server.catalog() as conn:
            await conn.fetchval("SELECT 1", timeout=5)

    async def get(self, tenant_id: str) -> Tenant:
        validate_tenant_id(tenant_id)
        async with self.server.catalog() as conn:
            tenant = await catalog.get(conn, tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant=tenant_id)
        return tenant

    async def events(self, tenant_id: str, limit: int) -> list[catalog.Event]:
        """The audit trail of a tenant, also after it was deleted; TenantNotFound when there is none."""
        validate_tenant_id(tenant_id)
        async with self.server.catalog() as conn:
            found = await catalog.events(conn, tenant_id, limit)
            if not found and await catalog.get(conn, tenant_id) is None:
                raise TenantNotFound(tenant=tenant_id)
        return found

    async def fleet(self) -> catalog.FleetCounts:
        """Fleet counts, at most ``fleet_cache_seconds`` old (dashboards poll; the aggregate reads every row)."""
        return await self._fleet.get()

    async def _count_fleet(self) -> catalog.FleetCounts:
        async with self.server.catalog() as conn:
            return await catalog.fleet(conn, self.migrations.latest_version)

    async def list(self, *, state: str | None, after: str | None, limit: int) -> list[Tenant]:
        async with self.server.catalog() as conn:
            return await catalog.page(conn, state=state, after=after, limit=limit)

    async def list_by_status(
        self, status: str, *, state: str | None, after: str | None, limit: int
    ) -> tuple[Sequence[Tenant], str | None]:
        """Tenants of one catalog page whose live schema status is ``status``, and the id to continue after.

        The catalog knows only version and error, so every tenant of the page is judged live: a connection to its
        database, a history read and a drift-record read per tenant, at most ``_STATUS_READS`` at a time. To bound
        a request's cost at ``limit`` tenants, a page may hold fewer matches than ``limit``, or none, while more
        tenants follow; the id is ``None`` only when the catalog has no more.
        """
        rows = await self.list(state=state, after=after, limit=limit + 1)
        page = rows[:limit]
        gate = asyncio.Semaphore(_STATUS_READS)

        async def judge(tenant: Tenant) -> SchemaStatus | None:
            async with gate:
                try:
                    return await self._status_of(tenant)
                except asyncpg.PostgresError as exc:
                    if sqlstate(exc) == INVALID_CATALOG_NAME:  # deleted since the page was read
                        return None
                    raise

        found = await asyncio.gather(*(judge(t) for t in page))
        matches = [t for t, s in zip(page, found, strict=True) if s is not None and s.status == status]
        return matches, page[-1].id if len(rows) > limit else None

    async def schema(self, tenant_id: str) -> SchemaStatus:
        """The tenant's level, read live from its own history table."""
        tenant = await self.get(tenant_id)
        found = await self._status_of(tenant)
        if found is None:
            raise TenantNotReady(f"tenant is {tenant.state}", tenant=tenant.id, state=tenant.state)
        return found

    async def _status_of(self, tenant: Tenant) -> SchemaStatus | None:
        """``None`` while the tenant has no schema to judge (provisioning, deleting)."""
        if tenant.state == "failed":
            return compute(tenant.id, tenant.database, [], self.migrations, error=tenant.error)
        if tenant.state != "ready":
            return None
        applied = await self._applied(tenant)
        drift = await self.drift.latest(tenant.id)
        return compute(tenant.id, tenant.database, applied, self.migrations, error=tenant.error, drift=drift)

    async def _applied(self, tenant: Tenant) -> _History:
        """A ready tenant's history, for reads: through a kept connection (see service.connections), or from
        memory when ``schema_cache_seconds`` allows. Every change the service makes to a tenant, on any replica,
        moves its ``updated_at`` in the catalog: the stamp of its cached history."""

        async def load() -> _History:
            return await self.connections.run(self._target(tenant), tenant.database, history.read)

        if self._levels is None:
            return await load()
        return await self._levels.get(tenant.id, (tenant.database, tenant.server, tenant.updated_at), load)

    # -- repair ---------------------------------------------------------------------------------------------

    async def repair(self, tenant_id: str, accepts: Sequence[Accept]) -> SchemaStatus:
        """Accept the current hash of edited, applied files under the tenant's lock; all or nothing.

        A replay (hashes already accepted) records nothing and succeeds. Raises RepairRejected (nothing
        recorded), TenantNotFound, TenantNotReady, TenantBusy.
        """
        validate_tenant_id(tenant_id)
        logs.tenant.set(tenant_id)
        lease = await self.locks.acquire(tenant_id)
        try:
            tenant = await _ready(lease.conn, tenant_id)
            detail = {"accept": [{"version": a.version, "sha256": a.sha256} for a in accepts]}
            op = await catalog.begin_operation(lease.conn, tenant_id, "repair", detail)
            tconn = await self._connect(tenant)
            try:
                try:
                    async with tconn.transaction():
                        repairs = repairs_for(await history.read(tconn), self.migrations, accepts)
                        if repairs:
                            await history.ensure(tconn)
                            await history.record_repairs(tconn, repairs)
                            await catalog.touch(lease.conn, tenant_id)  # a new stamp for cached levels
                except ServiceError as exc:
                    await catalog.end_operation(lease.conn, op, error_dict(exc))
                    raise
                await catalog.end_operation(lease.conn, op)
                applied = await history.read(tconn)
            finally:
                await tconn.close()
            drift = await self.drift.latest(tenant.id)
            return compute(tenant.id, tenant.database, applied, self.migrations, error=tenant.error, drift=drift)
        finally:
            await lease.release()

    # -- migrate --------------------------------------------------------------------------------------------

    async def migrate(
        self, tenant_id: str, *, allow_out_of_order: bool = False, to_version: int | None = None
    ) -> SchemaStatus:
        """Apply pending migrations under the tenant's lock; never on an edited or unknown history.

        ``to_version`` stops there (a rollout to an older target); the files above it stay pending.
        Raises HistoryMismatch, OutOfOrder (nothing applied), MigrationFailed (the tenant stays at its last
        committed version, the error recorded and shown until a later migrate succeeds), TenantBusy.
        """
        validate_tenant_id(tenant_id)
        lease = await self.locks.acquire(tenant_id)
        try:
            tenant = await _ready(lease.conn, tenant_id)
            tconn = await self._connect(tenant)
            try:
                return await self._migrate(lease.conn, tconn, tenant, allow_out_of_order, to_version)
            finally:
                await tconn.close()
        finally:
            await lease.release()

    async def migrate_on(self, conn: Conn, tenant_id: str, to_version: int) -> int | None:
        """A rollout's migrate; return the version reached.

        As :meth:`migrate`, but the tenant's lock is taken on ``conn`` (the rollout worker's own catalog
        connection), the history is read once, and the drift re-check is left to the sweep that follows the rollout
        (it costs more than the migration it follows: see bench/RESULTS.md)."""
        validate_tenant_id(tenant_id)
        lease = await self.locks.acquire_on(conn, tenant_id)
        try:
            tenant = await _ready(conn, tenant_id)
            tconn = await self._connect(tenant)
            try:
                return await self._apply_pending(conn, tconn, tenant, False, to_version)
            finally:
                await tconn.close()
        finally:
            await lease.release()

    async def _migrate(
        self, conn: Conn, tconn: Conn, tenant: Tenant, allow_out_of_order: bool, to_version: int | None = None
    ) -> SchemaStatus:
        await self._apply_pending(conn, tconn, tenant, allow_out_of_order, to_version)
        applied = await history.read(tconn)
        drift = await self._recheck(conn, tconn, tenant)
        return compute(tenant.id, tenant.database, applied, self.migrations, drift=drift)

    async def _apply_pending(
        self, conn: Conn, tconn: Conn, tenant: Tenant, allow_out_of_order: bool, to_version: int | None
    ) -> int | None:
        """Check the history, apply what is pending (up to ``to_version``), record the level; return it."""
        before, pending = await self._pending(tconn, tenant, allow_out_of_order, to_version)
        reached = before.current_version
        if not pending:
            await catalog.set_version(conn, tenant.id, reached, None)
            return reached
        op = await catalog.begin_operation(conn, tenant.id, "migrate", {"from": before.current_version})
        upgrade = await self._run_pending(tconn, before, pending)
        await catalog.end_migration(conn, op, tenant.id, upgrade.version, upgrade.error)
        if upgrade.failure is not None:
            raise upgrade.failure
        return upgrade.version

    async def upgrade_locked(self, tenant: Tenant, to_version: int) -> Upgrade:
        """Bring a tenant whose lock the caller holds up to ``to_version``, leaving the catalog to the caller: a
        rollout records the outcomes of several tenants in one statement (``rollout_catalog.record``).

        Raises HistoryMismatch, OutOfOrder (nothing applied), DatabaseUnavailable; a failed migration is an
        outcome (``error``), not an exception, because what it committed before failing must still be recorded.
        """
        tconn = await self._connect(tenant)
        try:
            before, pending = await self._pending(tconn, tenant, False, to_version)
            if not pending:
                return Upgrade(before.current_version, before.current_version, ran=False)
            return await self._run_pending(tconn, before, pending)
        finally:
            await tconn.close()

    async def _pending(
        self, tconn: Conn, tenant: Tenant, allow_out_of_order: bool, to_version: int | None
    ) -> tuple[SchemaStatus, Sequence[Migration]]:
        """The tenant's level and what to apply, refusing an edited or unknown history."""
        before = compute(tenant.id, tenant.database, await history.read(tconn), self.migrations)
        if before.modified or before.untracked:
            raise HistoryMismatch(
                tenant=tenant.id,
                modified=[m.version for m in before.modified],
                untracked=[u.version for u in before.untracked],
            )
        if before.out_of_order and not allow_out_of_order:
            raise OutOfOrder(tenant=tenant.id, versions=[m.version for m in before.out_of_order])
        return before, [m for m in before.pending if to_version is None or m.version <= to_version]

    async def _run_pending(self, tconn: Conn, before: SchemaStatus, pending: Sequence[Migration]) -> Upgrade:
        started = time.perf_counter()
        try:
            # A tenant with history rows has the history tables: no need to assert them again.
            await runner.apply(tconn, plan(pending), ensure_history=not before.applied)
        except MigrationFailed as exc:
            rows = await history.read(tconn)  # the batches before the failing one stay committed
            reached = max((a.version for a in rows), default=None)
            return Upgrade(before.current_version, reached, ran=True, failure=exc)
        reached = max([m.version for m in pending] + [a.version for a in before.applied])
        log.info(
            "tenant migrated",
            extra={"from_version": before.current_version, "version": reached, "duration_ms": _ms_since(started)},
        )
        return Upgrade(before.current_version, reached, ran=True)

    async def _recheck(self, conn: Conn, tconn: Conn, tenant: Tenant) -> DriftReport | None:
        """Record a drift check after a migration run; the run succeeded even if the check cannot be made."""
        try:
            return await self.drift.check_locked(conn, tconn, tenant.id, server=tenant.server)
        except ServiceError as exc:
            log.warning("drift check of %s after migrating failed: %s", tenant.id, exc.message)
            return await self.drift.latest(tenant.id)

    # -- delete ---------------------------------------------------------------------------------------------

    async def delete(self, tenant_id: str, *, confirm: str | None) -> None:
        """Drop the tenant's database (ending its connections) and forget the tenant.

        An adopted tenant's database was not made here (``database_owned`` is false): it is only forgotten, and
        stays on the server with its data and history, adoptable again.
        """
        validate_tenant_id(tenant_id)
        if confirm != tenant_id:
            raise ConfirmationRequired(tenant=tenant_id)
        lease = await self.locks.acquire(tenant_id)
        try:
            tenant = await catalog.get(lease.conn, tenant_id)
            if tenant is None:
                raise TenantNotFound(tenant=tenant_id)
            op = await catalog.begin_operation(lease.conn, tenant_id, "delete")
            await self._finish_delete(lease.conn, tenant)
            await catalog.end_operation(lease.conn, op)
        finally:
            await lease.release()

    async def _finish_delete(self, conn: Conn, tenant: Tenant) -> None:
        await catalog.mark(conn, tenant.id, "deleting", error=tenant.error)
        self._failpoint("delete.after_mark")
        # Also for an adopted database, which stays: the service keeps no connection to what it no longer manages.
        await self.connections.forget(tenant.server, tenant.database)
        await self._drop_owned(conn, tenant)
        self._failpoint("delete.after_drop")
        await catalog.remove(conn, tenant.id)

    # -- credentials ----------------------------------------------------------------------------------------

    async def rotate_credentials(self, tenant_id: str) -> str:
        """Give the tenant's role a new password (the old one stops working) and return the new connection URL.

        The role's privileges are asserted again; a ready tenant made before tenants had roles gets its role here.
        Raises TenantNotFound, TenantNotReady, RoleExists (a foreign role has the name), TenantBusy.
        """
        validate_tenant_id(tenant_id)
        lease = await self.locks.acquire(tenant_id)
        try:
            tenant = await _ready(lease.conn, tenant_id)
            op = await catalog.begin_operation(lease.conn, tenant_id, "rotate_credentials")
            try:
                password = await self._rotate(lease.conn, tenant)
            except ServiceError as exc:
                await catalog.end_operation(lease.conn, op, error_dict(exc))
                raise
            await catalog.end_operation(lease.conn, op)
        finally:
            await lease.release()
        dsn = self._target(tenant).admin_dsn
        return credentials.connection_url(dsn, tenant.database, password, tenant.database)

    async def _rotate(self, conn: Conn, tenant: Tenant) -> str:
        target = self._target(tenant)
        if tenant.role_owned:
            password = credentials.new_password()
            async with target.admin() as admin:
                await roles.set_password(admin, tenant.database, password)
        else:
            async with target.admin() as admin:
                if await roles.exists(admin, tenant.database):
                    raise RoleExists(role=tenant.database)
            password = await self._create_role(conn, tenant)
        async with target.admin() as admin:
            await roles.grant_connect(admin, tenant.database, tenant.database)
        tconn = await self._connect(tenant)
        try:
            await roles.grant_objects(tconn, tenant.database)
        finally:
            await tconn.close()
        return password

    # -- recovery -------------------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Finish or undo what a dead process left in flight; return how many tenants were touched."""
        async with self.server.catalog() as conn:
            stuck = await catalog.unfinished(conn)
        touched = 0
        for tenant in stuck:
            lease = await self.locks.try_acquire(tenant.id)
            if lease is None:
                continue  # a live process (another replica) is working on it
            try:
                current = await catalog.get(lease.conn, tenant.id)
                if current is None:
                    continue
                await self._recover_one(lease.conn, current)
                touched += 1
                log.warning("recovered tenant %s (was %s)", current.id, current.state)
            except ServiceError as exc:  # its server is down: the next start, or the next request on it, retries
                log.warning("cannot recover tenant %s now: %s", tenant.id, exc.message)
            finally:
                await lease.release()
        for template in self.templates.values():
            try:
                dropped = await template.drop_orphans()
            except ServiceError as exc:
                log.warning("cannot look for template databases on a server: %s", exc.message)
                continue
            if dropped:
                log.warning("dropped %d template database(s) whose build was interrupted", len(dropped))
        return touched

    async def _recover_one(self, conn: Conn, tenant: Tenant) -> None:
        if tenant.state == "deleting":
            await self._finish_delete(conn, tenant)
        elif tenant.state == "provisioning":
            error = {"code": "interrupted", "message": "creation was interrupted; POST again to retry"}
            await self._fail(conn, tenant, error)
        else:
            await self._drop_owned(conn, tenant)
