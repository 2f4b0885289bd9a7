"""Domain values → response models."""

from __future__ import annotations

from dataclasses import asdict

from service.api import schemas
from service.fleet.rollout_store import Rollout
from service.history.migrations import Migration, MigrationSet
from service.schema.drift import DriftReport
from service.store.budget import Pressure
from service.store.catalog import Tenant
from service.tenants.status import SchemaStatus


def tenant(t: Tenant, latest: int | None) -> schemas.TenantOut:
    return schemas.TenantOut(
        id=t.id,
        name=t.name,
        database=t.database,
        server=t.server,
        state=t.state,
        version=t.version,
        latest_version=latest,
        created_at=t.created_at,
        updated_at=t.updated_at,
        error=None if t.error is None else schemas.TenantError.model_validate(t.error),
        deleted_at=t.deleted_at,
        progress=None if t.step is None else {k: t.step[k] for k in ("op", "stage", "from", "to") if k in t.step},
        queue_position=t.queue_position,
        last_error=None if t.last_error is None else schemas.TenantError.model_validate(t.last_error),
    )


def _pending(m: Migration) -> schemas.PendingOut:
    return schemas.PendingOut(version=m.version, name=m.name, sha256=m.sha256)


def schema_status(s: SchemaStatus) -> schemas.SchemaOut:
    return schemas.SchemaOut(
        tenant=s.tenant,
        database=s.database,
        current_version=s.current_version,
        latest_version=s.latest_version,
        status=s.status,
        applied=[
            schemas.AppliedOut(
                version=a.version,
                name=a.name,
                sha256=a.sha256,
                applied_at=a.applied_at,
                duration_ms=round(a.duration_ms, 3),
                how=a.how,
                accepted_sha256=a.accepted_sha256,
                tool=a.tool,
                tool_version=a.tool_version,
            )
            for a in s.applied
        ],
        pending=[_pending(m) for m in s.pending],
        modified=[
            schemas.ModifiedOut(
                version=m.version, name=m.name, applied_sha256=m.applied_sha256, file_sha256=m.file_sha256
            )
            for m in s.modified
        ],
        untracked=[schemas.UntrackedOut(version=u.version, name=u.name, sha256=u.sha256) for u in s.untracked],
        out_of_order=[_pending(m) for m in s.out_of_order],
        error=None if s.error is None else schemas.TenantError.model_validate(s.error),
        drift=None if s.drift is None else drift(s.drift),
    )


def migration_set(ms: MigrationSet) -> schemas.MigrationsOut:
    return schemas.MigrationsOut(
        latest_version=ms.latest_version,
        items=[
            schemas.MigrationOut(
                version=m.version,
                name=m.name,
                sha256=m.sha256,
                transactional=m.transactional,
                file=m.file,
                tool=None if m.origin is None else m.origin.tool,
                tool_version=None if m.origin is None else m.origin.version,
            )
            for m in ms.migrations
        ],
        warnings=list(ms.warnings),
    )


def _differences(report: DriftReport) -> list[schemas.DifferenceOut]:
    return [schemas.DifferenceOut.model_validate(d.as_dict()) for d in report.differences]


def drift(report: DriftReport) -> schemas.DriftOut:
    return schemas.DriftOut(checked_at=report.checked_at, clean=report.clean, differences=_differences(report))


def drift_report(report: DriftReport) -> schemas.DriftReportOut:
    return schemas.DriftReportOut(
        tenant=report.tenant,
        version=report.version,
        checked_at=report.checked_at,
        clean=report.clean,
        differences=_differences(report),
    )


def rollout_summary(r: Rollout) -> schemas.RolloutSummary:
    return schemas.RolloutSummary.model_validate(r, from_attributes=True)


def rollout(r: Rollout) -> schemas.RolloutOut:
    items = [
        schemas.RolloutTenantOut(
            id=t.tenant_id,
            canary=t.canary,
            from_version=t.from_version,
            to_version=r.to_version,
            to_server=t.to_server,
            state=t.state,
            attempts=t.attempts,
            started_at=t.started_at,
            finished_at=t.finished_at,
            duration_ms=None if t.duration_ms is None else round(t.duration_ms, 3),
            error=None if t.error is None else schemas.TenantError.model_validate(t.error),
        )
        for t in r.tenants
    ]
    return schemas.RolloutOut(**rollout_summary(r).model_dump(), tenants=items)


def pressure(p: Pressure) -> schemas.ConnectionsOut:
    return schemas.ConnectionsOut(**asdict(p))
