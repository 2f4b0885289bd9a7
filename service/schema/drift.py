"""Schema drift: a tenant's live catalog against the schema its recorded level says it must have (the expected
schemas of :mod:`.expected`, compared by :mod:`.compare`). Every check is recorded in the catalog; sweeps check
the fleet with bounded concurrency, periodically if asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from service.config import DEFAULT_SERVER, Settings
from service.errors import (
    HistoryMismatch,
    ServiceError,
    TenantNotFound,
    TenantNotReady,
    VersionNotFound,
)
from service.history import table as history
from service.history.migrations import MigrationSet
from service.identifiers import validate_tenant_id
from service.schema import snapshot
from service.schema.compare import Difference, compare
from service.schema.expected import ExpectedSchemas
from service.schema.snapshot import Snapshot
from service.store import catalog
from service.store.catalog import DriftCheck, Tenant
from service.store.connections import TenantConnections
from service.store.db import Conn, Servers
from service.store.locks import TenantLocks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriftReport:
    tenant: str
    version: int | None
    checked_at: datetime
    clean: bool
    differences: tuple[Difference, ...]

    @classmethod
    def of(cls, check: DriftCheck) -> DriftReport:
        return cls(
            tenant=check.tenant_id,
            version=check.version,
            checked_at=check.checked_at,
            clean=check.clean,
            differences=tuple(Difference(**d) for d in check.differences),
        )


@dataclass(frozen=True, slots=True)
class SweepResult:
    checked: int
    drifted: tuple[str, ...]
    # Tenants not checked: busy (another operation held them) or failed ({"tenant", "code", "message"}).
    skipped: tuple[dict[str, str], ...] = field(default=())


class DriftChecker:
    """Checks tenants against their expected schema and records every result in the catalog."""

    def __init__(
        self,
        servers: Servers,
        migrations: MigrationSet,
        settings: Settings,
        locks: TenantLocks,
        connections: TenantConnections,
    ) -> None:
        self.servers = servers
        self.server = servers.catalog
        self.migrations = migrations
        self.locks = locks
        self.connections = connections
        self._expected = {
            t.name: ExpectedSchemas(self.server, migrations, settings.catalog_database, target=t) for t in servers
        }

    @property
    def expected(self) -> ExpectedSchemas:
        """The expected schemas of the first server (the only one unless several are configured)."""
        return self._expected[self.servers.first.name]

    def expected_for(self, server: str) -> ExpectedSchemas:
        """The expected schemas of a tenant server; DatabaseUnavailable when it is not configured."""
        return self._expected[self.servers.target(server).name]

    async def drop_orphans(self) -> list[str]:
        """Scratch databases left by dead processes, dropped on every server that answers (one that does not is
        cleaned at a later start)."""
        dropped: list[str] = []
        for expected in self._expected.values():
            try:
                dropped += await expected.drop_orphans()
            except ServiceError as exc:
                log.warning("cannot look for scratch databases on %s: %s", expected.target.name, exc.message)
        return dropped

    async def check(self, tenant_id: str) -> DriftReport:
        """Check one tenant under its lock (so no migration runs meanwhile) and record the result.

        Raises TenantNotFound, TenantNotReady, TenantBusy, HistoryMismatch (its level is a version with no file).
        """
        validate_tenant_id(tenant_id)
        lease = await self.locks.acquire(tenant_id)
        try:
            return await self._check_tenant(lease.conn, tenant_id)
        finally:
            await lease.release()

    async def _check_tenant(self, conn: Conn, tenant_id: str) -> DriftReport:
        tenant = await catalog.get(conn, tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant=tenant_id)
        if tenant.state != "ready":
            raise TenantNotReady(f"tenant is {tenant.state}", tenant=tenant_id, state=tenant.state)
        target = self.servers.target(tenant.server)
        # A read: a kept connection serves it (see service.connections).
        applied, live = await self.connections.run(target, tenant.database, _observe)
        return await self._record(conn, tenant.id, tenant.server, applied, live)

    async def check_locked(
        self, conn: Conn, tconn: Conn, tenant_id: str, *, server: str = DEFAULT_SERVER
    ) -> DriftReport:
        """Check a tenant whose lock the caller holds: ``conn`` on the catalog, ``tconn`` on its database."""
        applied, live = await _observe(tconn)
        return await self._record(conn, tenant_id, server, applied, live)

    async def _record(
        self, conn: Conn, tenant_id: str, server: str, applied: list[history.Applied], live: Snapshot
    ) -> DriftReport:
        version = max((a.version for a in applied), default=None)
        if version is not None and version not in self.migrations.by_version:
            raise HistoryMismatch(
                "the tenant's level has no migration file, so there is no expected schema to compare with",
                tenant=tenant_id,
                untracked=[version],
            )
        expected = await self.expected_for(server).get(version)
        differences = compare(expected, live)
        check = await catalog.record_drift(conn, tenant_id, version, [d.as_dict() for d in differences])
        return DriftReport.of(check)

    async def expected_schema(self, version: int) -> Snapshot:
        """What a database at ``version`` must contain.

        Raises VersionNotFound, ExpectedSchemaUnbuildable (a file fails to replay)."""
        if version not in self.migrations.by_version:
            raise VersionNotFound(version=version)
        return await self.expected.get(version)

    async def latest(self, tenant_id: str) -> DriftReport | None:
        """The newest recorded check of a tenant, ``None`` if it was never checked."""
        async with self.server.catalog() as conn:
            found = await catalog.latest_drift(conn, [tenant_id])
        return DriftReport.of(found[tenant_id]) if tenant_id in found else None

    async def sweep(self, concurrency: int) -> SweepResult:
        """Check every ready tenant, ``concurrency`` at a time; a tenant busy with another operation, or whose server
        does not answer, is skipped."""
        tenants = await self._ready_tenants()
        for server in dict.fromkeys(t.server for t in tenants):  # build once per server, before the fan-out
            try:
                await self.expected_for(server).every()
            except ServiceError as exc:  # its tenants are skipped one by one with this error
                log.warning("expected schemas of server %s: %s", server, exc.message)
        gate = asyncio.Semaphore(concurrency)

        async def one(tenant_id: str) -> DriftReport | dict[str, str]:
            async with gate:
                lease = await self.locks.try_acquire(tenant_id)
                if lease is None:
                    return {"tenant": tenant_id, "code": "tenant_busy", "message": "another operation is running"}
                try:
                    return await self._check_tenant(lease.conn, tenant_id)
                except ServiceError as exc:
                    return {"tenant": tenant_id, "code": exc.code, "message": exc.message}
                finally:
                    await lease.release()

        results = await asyncio.gather(*(one(t.id) for t in tenants))
        reports = [r for r in results if isinstance(r, DriftReport)]
        return SweepResult(
            checked=len(reports),
            drifted=tuple(r.tenant for r in reports if not r.clean),
            skipped=tuple(r for r in results if isinstance(r, dict)),
        )

    async def _ready_tenants(self) -> list[Tenant]:
        found: list[Tenant] = []
        after: str | None = None
        async with self.server.catalog() as conn:
            while True:
                page = await catalog.page(conn, state="ready", after=after, limit=500)
                found.extend(page)
                if len(page) < 500:
                    return found
                after = page[-1].id


@contextlib.asynccontextmanager
async def upkeep(checker: DriftChecker, interval: float, concurrency: int) -> AsyncIterator[None]:
    """For the app's lifetime: drop scratch databases a dead process left, and sweep every ``interval`` (0: never)."""
    dropped = await checker.drop_orphans()
    if dropped:
        log.warning("dropped %d scratch database(s) left by a dead process", len(dropped))
    task = asyncio.create_task(sweep_periodically(checker, interval, concurrency)) if interval > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def sweep_periodically(checker: DriftChecker, interval: float, concurrency: int) -> None:
    """Sweep the fleet every ``interval`` seconds until cancelled; a failed sweep is logged and retried later."""
    while True:
        await asyncio.sleep(interval)
        try:
            result = await checker.sweep(concurrency)
        except ServiceError as exc:
            log.warning("drift sweep failed: %s", exc.message)
            continue
        except Exception:
            log.exception("drift sweep failed")
            continue
        log.info(
            "drift sweep: %d checked, %d drifted, %d skipped", result.checked, len(result.drifted), len(result.skipped)
        )


async def _observe(tconn: Conn) -> tuple[list[history.Applied], Snapshot]:
    """What a drift check reads in the tenant database: its level and its live schema (nothing is written)."""
    return await history.read(tconn), await snapshot.read(tconn)
