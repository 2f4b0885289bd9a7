"""Request and response models of the HTTP API (pydantic lives at the edges only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.config import SERVER_NAME_PATTERN, Strategy
from service.identifiers import TENANT_ID_PATTERN

TenantId = Annotated[str, StringConstraints(strict=True, pattern=TENANT_ID_PATTERN, min_length=1, max_length=40)]
# A key becomes part of the setting name tenant.seed.<key>: PostgreSQL wants it to start with a letter or _.
SeedKey = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z_][a-z0-9_]{0,39}$", max_length=40)]
# No NUL: PostgreSQL text cannot hold it. Everything else is stored verbatim.
SeedValue = Annotated[str, StringConstraints(strict=True, max_length=1000, pattern=r"^[^\x00]*$")]
TenantName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
ServerName = Annotated[str, StringConstraints(strict=True, pattern=SERVER_NAME_PATTERN, max_length=31)]
LifecycleState = Literal["queued", "provisioning", "ready", "failed", "deleting", "deleted", "restoring", "moving"]
SchemaStatusValue = Literal["failed", "modified", "untracked", "drifted", "out_of_order", "behind", "up_to_date"]


class TenantCreate(BaseModel):
    """A tenant to create. The same body again is a replay (200); the same id with another body is 409."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"id": "acme", "name": "Acme Studio", "seed": {"admin_email": "a@acme.test"}}]},
    )

    id: TenantId = Field(description="1-40 characters of a-z, 0-9 and _, starting with a letter or digit.")
    name: TenantName | None = Field(default=None, description="Display name; defaults to the id.")
    seed: dict[SeedKey, SeedValue] = Field(
        default_factory=dict,
        max_length=50,
        description="Values given to seed files as current_setting('tenant.seed.<key>', true).",
    )
    strategy: Strategy | None = Field(
        default=None,
        description="replay: run every migration file in the new database; clone: copy a template database that "
        "was built by replaying them once and checked against the expected schema (same objects, history rows "
        "marked 'cloned'), then seed. Default: the TENANTS_STRATEGY setting. Not part of the tenant's identity: "
        "a replay of the request with another strategy is still a replay.",
    )
    server: ServerName | None = Field(
        default=None,
        description="The database server to create it on (GET /servers); default: the one with the fewest tenants "
        "among those with room. Fixed for the tenant's life; a replay may leave it out.",
    )


class MigrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: 0 or "yes" is not a boolean

    allow_out_of_order: bool = Field(default=False, description="Apply pending files older than the newest applied.")


class AcceptItem(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=0, description="An applied version whose file was edited.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The file's current sha256, as the operator saw it.")


class RepairRequest(BaseModel):
    """Edited, applied files an operator accepts as they now read; all are accepted or none."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"accept": [{"version": 3, "sha256": "9f86d08188...(64 hex digits)"}]}]},
    )

    accept: list[AcceptItem] = Field(min_length=1, max_length=1000)


class TenantError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    version: int | None = None
    file: str | None = None
    statement: int | None = None
    line: int | None = None
    sqlstate: str | None = None


class TenantOut(BaseModel):
    id: str
    name: str
    database: str
    server: str = Field(description="The database server it lives on.")
    state: LifecycleState
    version: int | None
    latest_version: int | None
    created_at: datetime
    updated_at: datetime
    error: TenantError | None
    deleted_at: datetime | None = Field(default=None, description="When it was deleted (state deleted).")
    progress: dict[str, Any] | None = Field(
        default=None,
        description="The step in flight (restoring, moving, deleting): {op, stage, from, to}; stages of a move: "
        "start, target, frozen (writes stopped on the source), copy, cleanup (the tenant is ready on `to`; the "
        "source's database is being dropped).",
    )
    queue_position: int | None = Field(
        default=None,
        description="While queued (Prefer: respond-async): 1 for the next creation to start, over all replicas.",
    )
    last_error: TenantError | None = Field(
        default=None,
        description="Its last failed operation's error (a background move or backup too): {op, code, message, at, "
        "...}; null once an operation succeeds after it.",
    )


_CONNECTION_URL = (
    "postgresql://<role>:<password>@<host>:<port>/<database> for the tenant's own login role. The password is in this "
    "answer only: it is stored nowhere; POST /tenants/{tenant_id}/credentials/rotate makes a new one."
)


class TenantCreated(TenantOut):
    """A tenant just made (201), or accepted (202): the only answers that carry its role's password."""

    connection_url: str = Field(description=_CONNECTION_URL)


class Credentials(BaseModel):
    connection_url: str = Field(description=_CONNECTION_URL)


class TenantPage(BaseModel):
    items: list[TenantOut]
    next: str | None = Field(description="Cursor for the next page, or null on the last page.")


class AppliedOut(BaseModel):
    version: int
    name: str
    sha256: str
    applied_at: datetime
    duration_ms: float
    how: Literal["applied", "baselined", "cloned"]
    accepted_sha256: str | None = Field(
        default=None, description="The file hash an operator accepted after an edit (the sha256 is what ran)."
    )
    tool: str | None = Field(default=None, description="The tool that wrote the folder (null: NNNN or Drizzle).")
    tool_version: str | None = Field(default=None, description="The file's version in its tool, as the tool writes it.")


class PendingOut(BaseModel):
    version: int
    name: str
    sha256: str


class ModifiedOut(BaseModel):
    version: int
    name: str
    applied_sha256: str
    file_sha256: str


class UntrackedOut(BaseModel):
    version: int
    name: str
    sha256: str


DriftObject = Literal[
    "schema",
    "extension",
    "enum",
    "sequence",
    "table",
    "view",
    "column",
    "primary_key",
    "unique",
    "foreign_key",
    "check",
    "exclusion",
    "index",
    "function",
    "trigger",
    "policy",
]


class DifferenceOut(BaseModel):
    """One object that differs; ``expected``/``actual`` hold only the differing attributes of a changed one."""

    object: DriftObject
    name: str = Field(description="Fully qualified: public.invoices, public.invoices.sent_at, public.f(integer).")
    change: Literal["missing", "unexpected", "changed"]
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None


class DriftOut(BaseModel):
    checked_at: datetime
    clean: bool
    differences: list[DifferenceOut]


class DriftReportOut(DriftOut):
    tenant: str
    version: int | None = Field(description="The recorded level the live schema was compared with.")


class SweepOut(BaseModel):
    checked: int
    drifted: list[str]
    skipped: list[dict[str, str]] = Field(description="Tenants not checked: {tenant, code, message}.")


class ExpectedSchemaOut(BaseModel):
    """What a database at this version must contain: kind → fully qualified name → attributes."""

    version: int
    file: str
    objects: dict[str, dict[str, dict[str, Any]]]


class DatabaseOut(BaseModel):
    name: str
    kind: Literal["managed", "unmanaged", "other", "internal"]
    tenant: str | None
    history: Literal["tenants", "drizzle", "golang-migrate", "flyway", "dbmate", "goose", "prisma", "none"]
    version: int | None = Field(description="Recorded level, or the level inferred from the live schema.")
    inferred: bool
    server: str = Field(description="The database server it is on.")


class DatabaseList(BaseModel):
    items: list[DatabaseOut]


class AdoptRequest(BaseModel):
    """An existing database to bring under management as this tenant; its data is never changed."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"database": "tenant_16", "migrate": True}]}
    )

    database: str = Field(min_length=1, max_length=63, description="The database's real name (it keeps it).")
    migrate: bool = Field(default=False, description="Apply the pending migrations after adopting.")
    baseline_version: int | None = Field(
        default=None, ge=0, description="The level to record when it cannot be read or inferred exactly."
    )
    server: ServerName | None = Field(
        default=None, description="The database server it is on; default: `default`, or the only server."
    )


class SchemaOut(BaseModel):
    tenant: str
    database: str
    current_version: int | None
    latest_version: int | None
    status: SchemaStatusValue
    applied: list[AppliedOut]
    pending: list[PendingOut]
    modified: list[ModifiedOut]
    untracked: list[UntrackedOut]
    out_of_order: list[PendingOut]
    error: TenantError | None
    drift: DriftOut | None = Field(default=None, description="The latest recorded drift check; null if never.")


class MigrationOut(BaseModel):
    version: int
    name: str
    sha256: str
    transactional: bool
    file: str
    tool: str | None = Field(default=None, description="The tool that wrote the folder (null: NNNN or Drizzle).")
    tool_version: str | None = Field(default=None, description="The file's version in its tool, as the tool writes it.")


class MigrationsOut(BaseModel):
    latest_version: int | None
    items: list[MigrationOut]
    warnings: list[str] = Field(
        default_factory=list,
        description="Files in the folder that never run: for a Drizzle Kit folder, those its journal does not list.",
    )


class EventOut(BaseModel):
    id: int
    kind: str
    actor: str
    state: Literal["running", "succeeded", "failed"]
    started_at: datetime
    finished_at: datetime | None
    detail: dict[str, Any] | None
    error: dict[str, Any] | None


class EventPage(BaseModel):
    items: list[EventOut]


class FleetServerOut(BaseModel):
    name: str
    tenants: int
    capacity: int | None = Field(description="Tenants it may hold; null: no limit.")


class FleetOut(BaseModel):
    latest_version: int | None
    tenants: int
    by_version: dict[str, int] = Field(description="Tenants per recorded version (ready ones).")
    by_state: dict[str, int] = Field(description="Tenants per lifecycle state.")
    by_status: dict[str, int] = Field(
        description="From the catalog: failed (creation or last migration failed), drifted (the newest drift check "
        "found differences), behind, up_to_date."
    )
    servers: list[FleetServerOut] = Field(description="Tenants per configured database server (no health check).")


class ServerOut(FleetServerOut):
    healthy: bool = Field(description="It answered a query within a couple of seconds.")
    version: str | None = Field(description="Its PostgreSQL version (server_version), null when unhealthy.")
    error: str | None = Field(description="Why it is unhealthy; null when healthy.")
    draining: bool = Field(default=False, description="It takes no new tenants (POST /servers/{name}/drain).")


class ServerList(BaseModel):
    items: list[ServerOut]


class RolloutCreate(BaseModel):
    """A rollout of the fleet to a version: every ready tenant below it (or those named), canaries first."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"to_version": 12, "concurrency": 8, "canary": 5, "max_failures": 1}]},
    )

    to_version: int | None = Field(default=None, ge=0, description="A loaded version; default the latest.")
    concurrency: int = Field(
        default=8, ge=1, le=64, description="Tenants migrated at once after the canaries (≤ TENANTS_MAX_PARALLEL)."
    )
    canary: int = Field(
        default=5, ge=0, le=100_000, description="The first tenants, migrated one at a time; any failure stops."
    )
    max_failures: int = Field(
        default=1, ge=0, le=100_000, description="Failures tolerated after the canaries; one more stops the rollout."
    )
    tenants: list[TenantId] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="Only these tenants, in this order (so the first `canary` are the canaries); default all, in id "
        "order. Tenants not ready or already at the target are left out.",
    )


RolloutState = Literal["running", "succeeded", "failed", "cancelled"]


class RolloutTenantOut(BaseModel):
    id: str
    canary: bool
    from_version: int | None = Field(description="Recorded level when its migration started (or the rollout did).")
    to_version: int | None = Field(description="The rollout's target version (null for a rollout of moves).")
    to_server: str | None = Field(default=None, description="A move's target server (drain, rebalance).")
    state: Literal["pending", "running", "succeeded", "failed", "skipped"] = Field(
        description="skipped: never started (the rollout stopped or was cancelled), or deleted meanwhile."
    )
    attempts: int = Field(description="More than 1 when a driver died while migrating it and it was run again.")
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: TenantError | None


class RolloutSummary(BaseModel):
    id: int
    state: RolloutState = Field(
        description="succeeded: every tenant did; failed: a tenant failed (stopped early if a canary failed or more "
        "than max_failures did); cancelled: cancelled with tenants left."
    )
    kind: Literal["migrate", "drain", "rebalance"] = Field(
        default="migrate",
        description="migrate (POST /rollouts) or moves: drain (POST /servers/{name}/drain), rebalance.",
    )
    server: str | None = Field(default=None, description="The drained server (kind drain).")
    to_version: int | None = Field(description="The target version (kind migrate; null for moves).")
    concurrency: int
    canary: int
    max_failures: int
    actor: str
    cancel_requested: bool
    created_at: datetime
    finished_at: datetime | None
    total: int = Field(description="done + failed + skipped + running + pending.")
    done: int = Field(description="Tenants migrated to the target.")
    failed: int
    skipped: int
    running: int
    pending: int


class RolloutOut(RolloutSummary):
    tenants: list[RolloutTenantOut] = Field(description="In run order: canaries first.")


class RolloutPage(BaseModel):
    items: list[RolloutSummary]
    next: int | None = Field(description="Pass as ?before= for older rollouts; null on the last page.")


class ConnectionsOut(BaseModel):
    """One server's connection budget in this process (see TENANTS_CONNECTION_SHARE)."""

    server: str
    ceiling: int | None = Field(description="Connections this process may hold open (None: not contacted yet).")
    max_connections: int | None
    reserved: int = Field(description="Held for this process's pools at their largest.")
    open: int = Field(description="Other connections open now (tenant databases, kept reads, scratch, locks).")
    waiting: int = Field(description="Requests waiting for a connection now.")
    refused: int = Field(description="Requests answered 503 since start because the budget was spent.")


class HealthOut(BaseModel):
    status: str
    connections: list[ConnectionsOut] | None = None


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is the stable machine-readable error code."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None
