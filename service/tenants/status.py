"""A tenant's level, computed from its own history rows against the migration set on disk (pure logic).

Precedence of the overall status: failed (a recorded error, or a half-applied file), modified, untracked, drifted,
out_of_order, behind, up_to_date. ``drifted``
comes from the latest recorded drift check (the only input here not read from the history).
An applied file counts as modified when its hash differs from the one in force: the hash that ran, or the newest
one an operator accepted for it (``POST /tenants/{id}/repair``, see :mod:`service.repair`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from service.history.migrations import Migration, MigrationSet
from service.history.table import Applied, Progress

if TYPE_CHECKING:  # drift imports the I/O modules; this one stays pure
    from service.schema.drift import DriftReport

Status = Literal["failed", "modified", "untracked", "drifted", "out_of_order", "behind", "up_to_date"]


@dataclass(frozen=True, slots=True)
class Modified:
    version: int
    name: str
    applied_sha256: str
    file_sha256: str


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    tenant: str
    database: str
    current_version: int | None
    latest_version: int | None
    status: Status
    applied: tuple[Applied, ...]
    pending: tuple[Migration, ...]
    modified: tuple[Modified, ...]
    untracked: tuple[Applied, ...]
    out_of_order: tuple[Migration, ...]
    error: dict[str, Any] | None
    drift: DriftReport | None = None
    # A file left half-applied (its own COMMIT, or outside a transaction): the next migrate resumes it.
    partial: Progress | None = None


def compute(
    tenant: str,
    database: str,
    applied: list[Applied],
    migrations: MigrationSet,
    *,
    error: dict[str, Any] | None = None,
    drift: DriftReport | None = None,
    partial: Progress | None = None,
) -> SchemaStatus:
    """Compare applied rows with the files: edited files, rows without a file, and files never applied.

    A half-applied file (``partial``) makes the tenant ``failed`` at that file and part, whatever else holds:
    it never looks complete."""
    if partial is not None and error is None:
        error = partial.error(tenant)
    by_version = migrations.by_version
    modified: list[Modified] = []
    untracked: list[Applied] = []
    for row in applied:
        file = by_version.get(row.version)
        if file is None or file.name != row.name:
            untracked.append(row)
        elif file.sha256 != row.effective_sha256:
            modified.append(Modified(row.version, row.name, row.effective_sha256, file.sha256))
    done = {row.version for row in applied}
    current = max(done) if done else None
    pending = [m for m in migrations.migrations if m.version not in done]
    out_of_order = [m for m in pending if current is not None and m.version < current]
    status: Status
    if error is not None:
        status = "failed"
    elif modified:
        status = "modified"
    elif untracked:
        status = "untracked"
    elif drift is not None and not drift.clean:
        status = "drifted"
    elif out_of_order:
        status = "out_of_order"
    elif pending:
        status = "behind"
    else:
        status = "up_to_date"
    return SchemaStatus(
        tenant=tenant,
        database=database,
        current_version=current,
        latest_version=migrations.latest_version,
        status=status,
        applied=tuple(applied),
        pending=tuple(pending),
        modified=tuple(modified),
        untracked=tuple(untracked),
        out_of_order=tuple(out_of_order),
        error=error,
        drift=drift,
        partial=partial,
    )
