"""Accepting an edited, already-applied migration file: the operator's way out of ``modified``.

An edited applied file blocks every migrate (``history_mismatch``) because nobody can tell from the files alone
whether the tenant still matches them. An operator who has checked (the edit was a comment, or the same change was
made by hand) accepts the file's *current* hash for that version. The hash must be sent, not implied: it proves
the operator looked at the file as it is now, so an edit made after they looked is not accepted by accident.

Why an append-only ``_tenants.repairs`` table instead of updating ``_tenants.history``: a history row is evidence
of the SQL that actually ran, and drift analysis and audits rely on it; rewriting it would erase that. The newest
repair of a version is what status compares the file with (:attr:`service.history.Applied.effective_sha256`), and
every acceptance keeps its old and new hash and its time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import RepairRejected
from service.history import table as history
from service.history.migrations import MigrationSet
from service.history.table import Applied, Repair
from service.store import catalog
from service.tenants.context import Context
from service.tenants.status import SchemaStatus, compute
from service.tenants.steps import locked, ready, recorded


@dataclass(frozen=True, slots=True)
class Accept:
    version: int
    sha256: str


def repairs_for(applied: Sequence[Applied], migrations: MigrationSet, accepts: Sequence[Accept]) -> list[Repair]:
    """The repairs to record; ``[]`` when every accepted hash is already in force (a replay).

    Raises :class:`RepairRejected` listing every refused entry (nothing is recorded then): a version that is not
    applied, one with no file of that name (untracked), a hash that is not the file's current one, a version
    given twice.
    """
    rows = {a.version: a for a in applied}
    rejected: list[dict[str, Any]] = []
    repairs: list[Repair] = []
    seen: set[int] = set()
    for accept in accepts:
        problem = _problem(accept, rows.get(accept.version), migrations, seen)
        seen.add(accept.version)
        if problem is not None:
            rejected.append({"version": accept.version, **problem})
            continue
        row = rows[accept.version]
        if row.effective_sha256 != accept.sha256:
            repairs.append(Repair(accept.version, row.effective_sha256, accept.sha256))
    if rejected:
        lines = "; ".join(f"version {r['version']}: {r['message']}" for r in rejected)
        raise RepairRejected(f"nothing was accepted: {lines}", rejected=rejected)
    return repairs


def _problem(accept: Accept, row: Applied | None, migrations: MigrationSet, seen: set[int]) -> dict[str, Any] | None:
    if accept.version in seen:
        return {"reason": "duplicate", "message": "given more than once"}
    if row is None:
        return {"reason": "not_applied", "message": "not applied on this tenant; there is nothing to accept"}
    file = migrations.by_version.get(accept.version)
    if file is None or file.name != row.name:
        return {
            "reason": "no_file",
            "message": f"no migration file {row.file} (untracked); only edited files can be accepted",
        }
    if file.sha256 != accept.sha256:
        return {
            "reason": "sha256_mismatch",
            "message": f"the sha256 given is not {file.file}'s current hash {file.sha256}",
            "file_sha256": file.sha256,
        }
    return None


async def repair(ctx: Context, tenant_id: str, accepts: Sequence[Accept]) -> SchemaStatus:
    """Accept the current hash of edited, applied files under the tenant's lock; all or nothing.

    A replay (hashes already accepted) records nothing and succeeds. Raises RepairRejected (nothing recorded),
    TenantNotFound, TenantNotReady, TenantBusy.
    """
    async with locked(ctx, tenant_id) as lease:
        tenant = await ready(lease.conn, tenant_id)
        detail = {"accept": [{"version": a.version, "sha256": a.sha256} for a in accepts]}
        tconn = await ctx.connect(tenant)
        try:
            async with recorded(lease.conn, tenant_id, "repair", detail), tconn.transaction():
                repairs = repairs_for(await history.read(tconn), ctx.migrations, accepts)
                if repairs:
                    await history.ensure(tconn)
                    await history.record_repairs(tconn, repairs)
                    await catalog.touch(lease.conn, tenant_id)  # a new stamp for cached levels
            applied = await history.read(tconn)
        finally:
            await tconn.close()
    drift = await ctx.drift.latest(tenant.id)
    return compute(tenant.id, tenant.database, applied, ctx.migrations, error=tenant.error, drift=drift)
