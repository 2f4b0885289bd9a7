"""The service's one exception tree.

Every error a caller can act on is a ``ServiceError`` with a stable machine-readable ``code``; the class docstring
is the default message. The HTTP status of each code is decided in one table (``service.api.problems``), and the
CLI prints the message. Driver errors are translated to this tree in ``service.db`` only, with ``from exc``.

::

    ServiceError
    ├─ InvalidTenantId              invalid_tenant_id        422
    ├─ InvalidRequest               invalid_request          422
    ├─ UnknownServer                unknown_server           422
    ├─ ConfirmationRequired         confirmation_required    400
    ├─ Unauthorized                 unauthorized             401
    ├─ Forbidden                    forbidden                403
    ├─ TenantNotFound               tenant_not_found         404
    ├─ VersionNotFound              version_not_found        404
    ├─ DatabaseNotFound             database_not_found       404
    ├─ RolloutNotFound              rollout_not_found        404
    ├─ TenantExists                 tenant_exists            409
    ├─ DatabaseExists               database_exists          409
    ├─ DatabaseNotAdoptable         database_not_adoptable   409
    ├─ AdoptionAmbiguous            adoption_ambiguous       409
    ├─ RoleExists                   role_exists              409
    ├─ RolePrivileged               role_privileged          409
    ├─ TenantBusy                   tenant_busy              409
    ├─ TenantNotReady               tenant_not_ready         409
    ├─ HistoryMismatch              history_mismatch         409
    ├─ OutOfOrder                   out_of_order             409
    ├─ RepairRejected               repair_rejected          409
    ├─ RolloutInProgress            rollout_in_progress      409
    ├─ RolloutFinished              rollout_finished         409
    ├─ ServerFull                   server_full              409
    ├─ ServerDraining               server_draining          409
    ├─ TenantDeleted                tenant_deleted           409
    ├─ TenantNotDeleted             tenant_not_deleted       409
    ├─ MoveRefused                  move_refused             409
    ├─ BackupNotFound               backup_not_found         404
    ├─ VerificationFailed           verification_failed      500
    ├─ ToolFailed                   tool_failed              500
    ├─ NoCapacity                   no_capacity              409
    ├─ ServerInsecure               server_insecure          (the service refuses to start)
    ├─ ConnectionBudgetTooSmall     connection_budget_too_small 503 (at start: the service refuses to start)
    ├─ MigrationSetInvalid          migration_set_invalid    (the service refuses to start)
    ├─ LintUnavailable              lint_unavailable         (tenantctl check --lint only)
    ├─ MigrationFailed              migration_failed         500
    │  └─ ExpectedSchemaUnbuildable expected_schema_unbuildable 409
    └─ DatabaseUnavailable          database_unavailable     503
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """The service could not complete the request."""

    code: ClassVar[str] = "service_error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)


class InvalidTenantId(ServiceError):
    """A tenant id is 1 to 40 characters of a-z, 0-9 and _, starting with a letter or digit."""

    code = "invalid_tenant_id"


class InvalidRequest(ServiceError):
    """The request is malformed."""

    code = "invalid_request"


class UnknownServer(ServiceError):
    """No configured database server has this name (GET /servers lists them)."""

    code = "unknown_server"


class ServerFull(ServiceError):
    """The named database server holds as many tenants as its capacity allows; name another or leave it out."""

    code = "server_full"


class NoCapacity(ServiceError):
    """Every database server holds as many tenants as its capacity allows; add a server or raise a capacity."""

    code = "no_capacity"


class ConfirmationRequired(ServiceError):
    """Deleting a tenant needs ?confirm=<tenant id>."""

    code = "confirmation_required"


class Unauthorized(ServiceError):
    """A valid bearer token is required."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """This token may only read."""

    code = "forbidden"


class TenantNotFound(ServiceError):
    """No tenant has this id."""

    code = "tenant_not_found"


class TenantExists(ServiceError):
    """A tenant with this id already exists with different attributes."""

    code = "tenant_exists"


class DatabaseExists(ServiceError):
    """A database with the tenant's name already exists and was not made by this service; adopt it instead."""

    code = "database_exists"


class RoleExists(ServiceError):
    """A database role with the tenant's name already exists and was not made by this service."""

    code = "role_exists"


class RolePrivileged(ServiceError):
    """The tenant's role has attributes a tenant must not have (listed), which only a superuser may remove.

    A superuser runs ``ALTER ROLE "<role>" <attributes>``; then the request succeeds."""

    code = "role_privileged"


class VersionNotFound(ServiceError):
    """No migration file has this version."""

    code = "version_not_found"


class DatabaseNotFound(ServiceError):
    """No database on the server has this name."""

    code = "database_not_found"


class DatabaseNotAdoptable(ServiceError):
    """This database cannot be adopted: it is a system or internal database, or already a tenant's."""

    code = "database_not_adoptable"


class AdoptionAmbiguous(ServiceError):
    """The database's schema matches no single migration version; name baseline_version to adopt it anyway."""

    code = "adoption_ambiguous"


class TenantBusy(ServiceError):
    """Another operation on this tenant is in progress; try again later."""

    code = "tenant_busy"


class TenantNotReady(ServiceError):
    """The tenant is not ready for this operation."""

    code = "tenant_not_ready"


class HistoryMismatch(ServiceError):
    """The tenant's history does not match the migration files (edited or unknown versions); nothing was applied."""

    code = "history_mismatch"


class OutOfOrder(ServiceError):
    """Pending migrations are older than the newest applied one; send allow_out_of_order to apply them."""

    code = "out_of_order"


class RepairRejected(ServiceError):
    """An accepted hash is not the file's current one, or the version cannot be repaired; nothing was accepted."""

    code = "repair_rejected"


class MigrationSetInvalid(ServiceError):
    """The migration files on disk are invalid."""

    code = "migration_set_invalid"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid migration set:\n  " + "\n  ".join(problems),
            problems=problems,
        )


class ServerInsecure(ServiceError):
    """Every role may create objects in a database the service's admin sessions use; the service does not start."""

    code = "server_insecure"


class ConnectionBudgetTooSmall(ServiceError):
    """The connection ceiling of a server cannot hold the service's pools; lower them or raise the ceiling."""

    code = "connection_budget_too_small"


class LintUnavailable(ServiceError):
    """squawk is not installed (pip install squawk-cli), so migration files cannot be linted."""

    code = "lint_unavailable"


class MigrationFailed(ServiceError):
    """A migration failed; its transaction was rolled back."""

    code = "migration_failed"


class ExpectedSchemaUnbuildable(MigrationFailed):
    """The expected schema cannot be built: a migration file fails to replay into an empty database (named)."""

    code = "expected_schema_unbuildable"


class DatabaseUnavailable(ServiceError):
    """The database server cannot be reached."""

    code = "database_unavailable"


class RolloutNotFound(ServiceError):
    """No rollout has this id."""

    code = "rollout_not_found"


class RolloutInProgress(ServiceError):
    """Another rollout is running; wait for it or cancel it (POST /rollouts/{id}/cancel)."""

    code = "rollout_in_progress"


class RolloutFinished(ServiceError):
    """The rollout has already finished; it can no longer be cancelled."""

    code = "rollout_finished"


class ServerDraining(ServiceError):
    """The named database server is draining: it takes no new tenants (POST /servers/{name}/undrain ends that)."""

    code = "server_draining"


class TenantDeleted(ServiceError):
    """A deleted tenant holds this id until it is purged; undelete it (POST /tenants/{id}/undelete) or purge it."""

    code = "tenant_deleted"


class TenantNotDeleted(ServiceError):
    """Only a deleted tenant can be undeleted."""

    code = "tenant_not_deleted"


class MoveRefused(ServiceError):
    """The tenant cannot be moved there: it is already on that server, its database is not the service's own, or
    the source's admin role may not do what a move needs (``reason``: ``cannot_end_sessions``,
    ``verifier_unreadable``, ``cannot_set_password``, ``no_password``; the message says what to run)."""

    code = "move_refused"


class BackupNotFound(ServiceError):
    """No backup of this tenant has this id."""

    code = "backup_not_found"


class VerificationFailed(ServiceError):
    """The copy differs from its source (schema, history, rows); it was dropped and the tenant left as it was."""

    code = "verification_failed"


class ToolFailed(ServiceError):
    """pg_dump or pg_restore failed or cannot be found."""

    code = "tool_failed"
