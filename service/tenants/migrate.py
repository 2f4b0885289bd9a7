"""Migrate a tenant: check its history against the files, apply what is pending, record the level it reached.

Never on an edited or unknown history (``history_mismatch``), nor out of order unless asked. A failed file leaves
the tenant at its last committed version with the error recorded and shown until a later migrate succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import HistoryMismatch, MigrationFailed, OutOfOrder, ServiceError
from service.history import runner
from service.history import table as history
from service.history.migrations import Migration, plan
from service.history.runner import Resume
from service.history.table import Progress
from service.identifiers import validate_tenant_id
from service.schema.drift import DriftReport
from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import Conn
from service.tenants.context import Context
from service.tenants.status import SchemaStatus, compute
from service.tenants.steps import error_dict, locked, ms_since, ready

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


async def migrate(
    ctx: Context, tenant_id: str, *, allow_out_of_order: bool = False, to_version: int | None = None
) -> SchemaStatus:
    """Apply pending migrations under the tenant's lock; never on an edited or unknown history.

    ``to_version`` stops there (a rollout to an older target); the files above it stay pending.
    Raises HistoryMismatch, OutOfOrder (nothing applied), MigrationFailed (the tenant stays at its last
    committed version, the error recorded and shown until a later migrate succeeds), TenantBusy.
    """
    async with locked(ctx, tenant_id) as lease:
        tenant = await ready(lease.conn, tenant_id)
        tconn = await ctx.connect(tenant)
        try:
            await _apply_pending(ctx, lease.conn, tconn, tenant, allow_out_of_order, to_version)
            applied = await history.read(tconn)
            drift = await _recheck(ctx, lease.conn, tconn, tenant)
        finally:
            await tconn.close()
    return compute(tenant.id, tenant.database, applied, ctx.migrations, drift=drift)


async def migrate_on(ctx: Context, conn: Conn, tenant_id: str, to_version: int) -> int | None:
    """A rollout's migrate; return the version reached.

    As :func:`migrate`, but the tenant's lock is taken on ``conn`` (the rollout worker's own catalog connection),
    the history is read once, and the drift re-check is left to the sweep that follows the rollout (it costs more
    than the migration it follows: see bench/RESULTS.md)."""
    validate_tenant_id(tenant_id)
    lease = await ctx.locks.acquire_on(conn, tenant_id)
    try:
        tenant = await ready(conn, tenant_id)
        tconn = await ctx.connect(tenant)
        try:
            return await _apply_pending(ctx, conn, tconn, tenant, False, to_version)
        finally:
            await tconn.close()
    finally:
        await lease.release()


async def upgrade_locked(ctx: Context, tenant: Tenant, to_version: int) -> Upgrade:
    """Bring a tenant whose lock the caller holds up to ``to_version``, leaving the catalog to the caller: a
    rollout records the outcomes of several tenants in one statement (``fleet.rollout_store.record``).

    Raises HistoryMismatch, OutOfOrder (nothing applied), DatabaseUnavailable; a failed migration is an outcome
    (``error``), not an exception, because what it committed before failing must still be recorded.
    """
    tconn = await ctx.connect(tenant)
    try:
        before, pending = await _pending(ctx, tconn, tenant, False, to_version)
        if not pending:
            return Upgrade(before.current_version, before.current_version, ran=False)
        return await _run_pending(tconn, before, pending)
    finally:
        await tconn.close()


async def _apply_pending(
    ctx: Context, conn: Conn, tconn: Conn, tenant: Tenant, allow_out_of_order: bool, to_version: int | None
) -> int | None:
    """Check the history, apply what is pending (up to ``to_version``), record the level; return it."""
    before, pending = await _pending(ctx, tconn, tenant, allow_out_of_order, to_version)
    reached = before.current_version
    if not pending:
        await catalog.set_version(conn, tenant.id, reached, None)
        return reached
    op = await catalog.begin_operation(conn, tenant.id, "migrate", {"from": before.current_version})
    upgrade = await _run_pending(tconn, before, pending)
    await catalog.end_migration(conn, op, tenant.id, upgrade.version, upgrade.error)
    if upgrade.failure is not None:
        raise upgrade.failure
    return upgrade.version


async def _pending(
    ctx: Context, tconn: Conn, tenant: Tenant, allow_out_of_order: bool, to_version: int | None
) -> tuple[SchemaStatus, Sequence[Migration]]:
    """The tenant's level and what to apply, refusing an edited or unknown history (or half-applied file)."""
    applied, partial = await history.read_state(tconn)
    before = compute(tenant.id, tenant.database, applied, ctx.migrations, partial=partial)
    if partial is not None:
        _check_resumable(tenant, partial, before)
    if before.modified or before.untracked:
        raise HistoryMismatch(
            tenant=tenant.id,
            modified=[m.version for m in before.modified],
            untracked=[u.version for u in before.untracked],
        )
    if before.out_of_order and not allow_out_of_order:
        raise OutOfOrder(tenant=tenant.id, versions=[m.version for m in before.out_of_order])
    return before, [m for m in before.pending if to_version is None or m.version <= to_version]


def _check_resumable(tenant: Tenant, partial: Progress, before: SchemaStatus) -> None:
    """A half-applied file resumes only as the file it was: first of the pending ones, with the same hash.

    Raises HistoryMismatch (nothing applied) otherwise: what ran of it cannot be matched with the file any more.
    """
    first = before.pending[0] if before.pending else None
    if first is not None and first.version == partial.version and first.sha256 == partial.sha256:
        return
    raise HistoryMismatch(
        f"{partial.file} is half-applied (committed up to statement {partial.statement}, part {partial.part} of "
        f"{partial.parts}) and the migration files no longer have it as it ran (edited, renamed or removed); "
        f"restore the file as it was to let the retry finish it",
        tenant=tenant.id,
        modified=[partial.version],
        untracked=[],
    )


async def _run_pending(tconn: Conn, before: SchemaStatus, pending: Sequence[Migration]) -> Upgrade:
    started = time.perf_counter()
    partial = before.partial
    resume = None if partial is None else Resume(partial.version, partial.statement)
    try:
        # A tenant with history rows has the history tables: no need to assert them again.
        await runner.apply(tconn, plan(pending), ensure_history=not before.applied, resume=resume)
    except MigrationFailed as exc:
        rows = await history.read(tconn)  # the batches before the failing one stay committed
        reached = max((a.version for a in rows), default=None)
        return Upgrade(before.current_version, reached, ran=True, failure=exc)
    reached = max([m.version for m in pending] + [a.version for a in before.applied])
    log.info(
        "tenant migrated",
        extra={"from_version": before.current_version, "version": reached, "duration_ms": ms_since(started)},
    )
    return Upgrade(before.current_version, reached, ran=True)


async def _recheck(ctx: Context, conn: Conn, tconn: Conn, tenant: Tenant) -> DriftReport | None:
    """Record a drift check after a migration run; the run succeeded even if the check cannot be made."""
    try:
        return await ctx.drift.check_locked(conn, tconn, tenant.id, server=tenant.server)
    except ServiceError as exc:
        log.warning("drift check of %s after migrating failed: %s", tenant.id, exc.message)
        return await ctx.drift.latest(tenant.id)
