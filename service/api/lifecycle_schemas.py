"""Request and response models of a tenant's life after creation: backups, restore, undelete, move, drain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.api.schemas import ServerName, TenantId, TenantOut

BACKUP_ID_PATTERN = r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{4}$"
BackupId = Annotated[str, StringConstraints(strict=True, pattern=BACKUP_ID_PATTERN, max_length=32)]


class BackupOut(BaseModel):
    id: str = Field(description="Sortable by time: <UTC timestamp>-<4 hex digits>.")
    tenant: str
    state: Literal["writing", "complete"] = Field(description="writing: being taken (Prefer: respond-async).")
    version: int | None = Field(description="The tenant's migration level when it was taken.")
    server: str = Field(description="The server the tenant was on.")
    size_bytes: int | None = Field(description="Size of the pg_dump archive (null while writing).")
    sha256: str | None = Field(description="sha256 of the archive, also in its manifest (null while writing).")
    created_at: datetime


class BackupList(BaseModel):
    items: list[BackupOut] = Field(description="Newest first; at most TENANTS_BACKUP_RETENTION.")


class RestoreRequest(BaseModel):
    """Which backup to restore, and where: in place (the default), or into a new tenant."""

    model_config = ConfigDict(
        extra="forbid", strict=True, populate_by_name=True,
        json_schema_extra={"examples": [{"backup": "20261206T023000123456Z-1a2b"}]},
    )  # fmt: skip

    backup: BackupId = Field(description="A complete backup of this tenant (GET /tenants/{id}/backups).")
    as_: TenantId | None = Field(
        default=None,
        alias="as",
        description="Restore into a new tenant of this id (own role and password, in the answer) and leave this one "
        "alone. Default: in place.",
    )


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"server": "b"}]})

    server: ServerName = Field(description="The server to move it to (GET /servers).")
    rotate_password: bool = Field(
        default=False,
        description="Give the role a new password (at once; the old one stops working) and make it on the target "
        "with that one, returned in `connection_url`. For a server whose admin role is not a superuser and so cannot "
        "read the role's password verifier (else 409 move_refused, details.reason verifier_unreadable).",
    )


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    concurrency: int = Field(default=2, ge=1, le=32, description="Tenants moved at once.")
    max_failures: int = Field(default=0, ge=0, description="Failed moves tolerated; one more and no move starts.")


class DrainOut(BaseModel):
    server: str
    draining: bool = Field(description="It takes no new tenants.")
    state: Literal["running", "succeeded", "failed", "cancelled"] | None = Field(
        description="Of the drain (a rollout of moves): running, succeeded (none left), failed (a move failed; "
        "POST drain again to try those left); null when not draining."
    )
    tenants: int = Field(description="Tenants still on the server.")
    rollout: int | None = Field(default=None, description="The drain's rollout: GET /rollouts/{id} for each tenant.")
    moved: int = 0
    failed: int = 0
    concurrency: int | None = None
    max_failures: int | None = None
    failures: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Each tenant whose move failed, by id: its error {code, message, ...}."
    )


class TenantMoving(TenantOut):
    """A move accepted (202); with `rotate_password`, the only answer that carries the role's new password."""

    connection_url: str | None = Field(
        default=None,
        description="With rotate_password: the role's new connection URL on the target (valid there once the move "
        "is done; on the source until then, and still there if the move fails). Otherwise null.",
    )
