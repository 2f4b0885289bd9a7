"""The control catalog: which tenants exist, their lifecycle state, and what was done to them.

Functions take a connection (the caller owns transactions and locks). The catalog upgrades itself at start, under
an advisory lock so that replicas starting together apply each catalog version once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import asyncpg

from service.config import DEFAULT_SERVER
from service.store import audit, sql
from service.store.db import Conn

State = Literal["queued", "provisioning", "ready", "failed", "deleting", "deleted", "restoring", "moving"]
STATES: Final = ("queued", "provisioning", "ready", "failed", "deleting", "deleted", "restoring", "moving")
CATALOG_VERSIONS: Final = (
    "catalog_0001.sql",
    "catalog_0002.sql",
    "catalog_0003.sql",
    "catalog_0004.sql",
    "catalog_0005.sql",
    "catalog_0006.sql",
    "catalog_0007.sql",
    "catalog_0008.sql",
    "catalog_0009.sql",
    "catalog_0010.sql",
)
_CATALOG_LOCK: Final = (0x7E4A1, 0)

_COLUMNS: Final = (
    "id, name, database, state, request_sha256, database_owned, version, error, created_at, updated_at, role_owned,"
    " server, deleted_at, step, adoption, last_error"
)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    database: str
    state: State
    request_sha256: str
    database_owned: bool
    version: int | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    # true from just before CREATE ROLE: only a role the catalog recorded as its own is ever dropped.
    role_owned: bool = False
    # The database server it lives on (TENANTS_SERVERS), fixed when it was created or adopted.
    server: str = DEFAULT_SERVER
    # When it was deleted (state ``deleted``): purged TENANTS_DELETE_RETENTION later.
    deleted_at: datetime | None = None
    # The non-transactional step in flight (catalog_0006.sql), for recovery: {"op", "stage", ...}.
    step: dict[str, Any] | None = None
    # An adopted database's state before adoption (catalog_0008.sql), which DELETE gives back.
    adoption: dict[str, Any] | None = None
    # The error of its last failed operation, cleared by the next that succeeds (catalog_0010.sql).
    last_error: dict[str, Any] | None = None
    queue_position: int | None = None  # while queued: 1 for the next to start (filled in by reads that show it)


_TENANT_FIELDS: Final = frozenset(c.strip() for c in _COLUMNS.split(","))
# The columns prefixed, for queries that join tenants as t (store/listing.py).
TENANT_COLUMNS_T: Final = ", ".join(f"t.{c}" for c in sorted(_TENANT_FIELDS))


def tenant_of(row: asyncpg.Record) -> Tenant:
    """A tenant from a row holding its columns (other columns are ignored)."""
    return _tenant({k: v for k, v in row.items() if k in _TENANT_FIELDS})


def _tenant(row: asyncpg.Record | dict[str, Any]) -> Tenant:
    values = dict(row)
    for key in ("error", "step", "adoption", "last_error"):
        if isinstance(values.get(key), str):
            values[key] = json.loads(values[key])
    return Tenant(**values)


async def upgrade(conn: Conn) -> int:
    """Bring the catalog schema to the newest version; return that version."""
    await conn.execute("SELECT pg_advisory_lock($1, $2)", *_CATALOG_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS catalog_versions (version integer PRIMARY KEY)")
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM catalog_versions")
        for number, name in enumerate(CATALOG_VERSIONS, start=1):
            if number > current:
                async with conn.transaction():
                    await conn.execute(sql.load(name))
                    await conn.execute("INSERT INTO catalog_versions (version) VALUES ($1)", number)
        return len(CATALOG_VERSIONS)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", *_CATALOG_LOCK)


async def get(conn: Conn, tenant_id: str) -> Tenant | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM tenants WHERE id = $1", tenant_id)
    return None if row is None else _tenant(row)


async def set_adoption(conn: Conn, tenant_id: str, before: dict[str, Any]) -> None:
    await conn.execute("UPDATE tenants SET adoption = $2::jsonb WHERE id = $1", tenant_id, json.dumps(before))


async def get_many(conn: Conn, tenant_ids: Sequence[str]) -> dict[str, Tenant]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM tenants WHERE id = ANY($1::text[])", list(tenant_ids))
    return {r["id"]: _tenant(r) for r in rows}


async def insert(
    conn: Conn, tenant_id: str, name: str, database: str, request_sha256: str, *, server: str = DEFAULT_SERVER
) -> Tenant:
    row = await conn.fetchrow(
        f"""INSERT INTO tenants (id, name, database, state, request_sha256, server)
            VALUES ($1, $2, $3, 'provisioning', $4, $5) RETURNING {_COLUMNS}""",
        tenant_id,
        name,
        database,
        request_sha256,
        server,
    )
    assert row is not None
    return _tenant(row)


async def restart(conn: Conn, tenant_id: str, name: str, request_sha256: str, *, server: str | None = None) -> Tenant:
    """Put a failed or interrupted tenant back to ``provisioning`` for a retry from scratch (on ``server`` if
    given: it owns nothing anywhere by then)."""
    row = await conn.fetchrow(
        f"""UPDATE tenants SET state = 'provisioning', name = $2, request_sha256 = $3, error = NULL,
                   version = NULL, server = coalesce($4, server), updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}""",
        tenant_id,
        name,
        request_sha256,
        server,
    )
    assert row is not None
    return _tenant(row)


async def set_owned(conn: Conn, tenant_id: str, owned: bool) -> None:
    await conn.execute("UPDATE tenants SET database_owned = $2, updated_at = now() WHERE id = $1", tenant_id, owned)


async def set_role_owned(conn: Conn, tenant_id: str, owned: bool) -> None:
    await conn.execute("UPDATE tenants SET role_owned = $2, updated_at = now() WHERE id = $1", tenant_id, owned)


async def mark(
    conn: Conn,
    tenant_id: str,
    state: State,
    *,
    version: int | None = None,
    error: dict[str, Any] | None = None,
) -> Tenant:
    """Set the lifecycle state, the last seen version and the last error (``None`` clears it)."""
    row = await conn.fetchrow(
        f"""UPDATE tenants SET state = $2, version = coalesce($3, version), error = $4::jsonb, updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}""",
        tenant_id,
        state,
        version,
        None if error is None else json.dumps(error),
    )
    assert row is not None
    return _tenant(row)


async def set_version(conn: Conn, tenant_id: str, version: int | None, error: dict[str, Any] | None) -> None:
    await conn.execute(
        "UPDATE tenants SET version = $2, error = $3::jsonb, updated_at = now() WHERE id = $1",
        tenant_id,
        version,
        None if error is None else json.dumps(error),
    )


async def touch(conn: Conn, tenant_id: str) -> None:
    """Mark a change the tenant's row does not otherwise show (its ``updated_at`` stamps cached reads)."""
    await conn.execute("UPDATE tenants SET updated_at = now() WHERE id = $1", tenant_id)


async def remove(conn: Conn, tenant_id: str) -> None:
    await conn.execute("DELETE FROM tenants WHERE id = $1", tenant_id)


async def page(conn: Conn, *, state: str | None, after: str | None, limit: int) -> list[Tenant]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM tenants
            WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR id > $2)
            ORDER BY id LIMIT $3""",
        state,
        after,
        limit,
    )
    return [_tenant(r) for r in rows]


async def unfinished(conn: Conn) -> list[Tenant]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM tenants
            WHERE state IN ('provisioning', 'deleting', 'restoring', 'moving') OR step IS NOT NULL
               OR (state = 'failed' AND (database_owned OR role_owned))
            ORDER BY id"""
    )
    return [_tenant(r) for r in rows]


async def begin_operation(conn: Conn, tenant_id: str, kind: str, detail: dict[str, Any] | None = None) -> int:
    op_id: int = await conn.fetchval(
        """INSERT INTO operations (tenant_id, kind, actor, state, detail)
           VALUES ($1, $2, $3, 'running', $4::jsonb) RETURNING id""",
        tenant_id,
        kind,
        audit.actor.get(),
        None if detail is None else json.dumps(detail),
    )
    return op_id


async def end_operation(conn: Conn, op_id: int, error: dict[str, Any] | None = None) -> None:
    """End it; the tenant's ``last_error`` becomes this error (with the operation's kind and time), or is cleared."""
    await conn.execute(
        """WITH op AS (
               UPDATE operations SET state = $2, finished_at = now(), error = $3::jsonb WHERE id = $1
               RETURNING tenant_id, kind, finished_at)
           UPDATE tenants SET last_error = CASE WHEN $3::jsonb IS NULL THEN NULL
               ELSE $3::jsonb || jsonb_build_object('op', op.kind, 'at', op.finished_at) END
           FROM op WHERE tenants.id = op.tenant_id AND (tenants.last_error IS NOT NULL OR $3::jsonb IS NOT NULL)""",
        op_id,
        "failed" if error else "succeeded",
        None if error is None else json.dumps(error),
    )


async def with_running_operations(conn: Conn) -> list[str]:
    """Tenants (deleted ones too) with an operation still ``running``: in progress, or its process died."""
    rows = await conn.fetch("SELECT DISTINCT tenant_id FROM operations WHERE state = 'running' ORDER BY 1")
    return [r["tenant_id"] for r in rows]


async def close_interrupted(conn: Conn, tenant_id: str, finished_kind: str | None, error: dict[str, Any]) -> int:
    """End the tenant's ``running`` operations (call holding its lock: none is really running): those of
    ``finished_kind`` succeeded (recovery finished them), the others failed with ``error``; each is marked
    ``"recovered": true`` in its detail. Returns how many were closed."""
    closed: int = await conn.fetchval(
        """WITH closed AS (
               UPDATE operations SET finished_at = now(),
                      state = CASE WHEN kind = $2 THEN 'succeeded' ELSE 'failed' END,
                      error = CASE WHEN kind = $2 THEN NULL ELSE $3::jsonb END,
                      detail = coalesce(detail, '{}'::jsonb) || '{"recovered": true}'::jsonb
               WHERE tenant_id = $1 AND state = 'running' RETURNING 1
           ) SELECT count(*) FROM closed""",
        tenant_id,
        finished_kind,
        json.dumps(error),
    )
    return closed


async def end_migration(
    conn: Conn, op_id: int, tenant_id: str, version: int | None, error: dict[str, Any] | None = None
) -> None:
    """:func:`end_operation` and :func:`set_version` in one statement: a rollout makes one per tenant."""
    await conn.execute(
        """WITH op AS (
               UPDATE operations SET state = $4, finished_at = now(), error = $5::jsonb WHERE id = $1
           )
           UPDATE tenants SET version = $3, error = $5::jsonb, updated_at = now() WHERE id = $2""",
        op_id,
        tenant_id,
        version,
        "failed" if error else "succeeded",
        None if error is None else json.dumps(error),
    )


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    actor: str
    state: str
    started_at: datetime
    finished_at: datetime | None
    detail: dict[str, Any] | None
    error: dict[str, Any] | None


async def events(conn: Conn, tenant_id: str, limit: int) -> list[Event]:
    """A tenant's operations, newest first (kept after the tenant is deleted: it is the audit trail)."""
    rows = await conn.fetch(
        """SELECT id, kind, actor, state, started_at, finished_at, detail, error FROM operations
           WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2""",
        tenant_id,
        limit,
    )
    return [
        Event(**{**dict(r), **{k: json.loads(r[k]) if isinstance(r[k], str) else r[k] for k in ("detail", "error")}})
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class FleetCounts:
    tenants: int
    by_version: dict[str, int]
    by_state: dict[str, int]
    by_status: dict[str, int]
    by_server: dict[str, int] = field(default_factory=dict)


# Tenants whose newest drift check found differences: only unclean checks are read (a partial index,
# catalog_0007.sql), each with one probe for a newer check of its tenant.
DRIFTED_SQL: Final = """(SELECT d.tenant_id FROM drift_checks d WHERE NOT d.clean
               AND NOT EXISTS (SELECT FROM drift_checks n WHERE n.tenant_id = d.tenant_id AND n.id > d.id))"""
# A tenant's status as far as the catalog knows it, in the precedence of tenants.status.compute: its last error,
# then its newest drift check, then its version; NULL while provisioning or deleting. "modified" and "untracked"
# are only known from the tenant's own history. Needs ``tenants t`` in scope; $1 is the latest version.
STATUS_SQL: Final = f"""CASE
                  WHEN t.state = 'failed' OR t.error IS NOT NULL THEN 'failed'
                  WHEN t.state <> 'ready' THEN NULL
                  WHEN t.id IN {DRIFTED_SQL} THEN 'drifted'
                  WHEN t.version IS NOT DISTINCT FROM $1 THEN 'up_to_date'
                  ELSE 'behind' END"""
CATALOG_STATUSES: Final = ("failed", "drifted", "behind", "up_to_date")


async def fleet(conn: Conn, latest: int | None) -> FleetCounts:
    """Counts over the whole fleet from the catalog alone: no tenant database is opened.

    ``by_status`` is what the catalog knows: failed (creation or last migration failed), drifted (the newest drift
    check found differences), behind, up_to_date.
    """
    rows = await conn.fetch(
        f"""SELECT t.state, t.version, {STATUS_SQL} AS status, t.server, count(*) AS n
           FROM tenants t GROUP BY 1, 2, 3, 4""",
        latest,
    )
    by_version: dict[str, int] = {}
    by_state: dict[str, int] = {}
    by_status: dict[str, int] = dict.fromkeys(CATALOG_STATUSES, 0)
    by_server: dict[str, int] = {}
    for r in rows:
        by_server[r["server"]] = by_server.get(r["server"], 0) + r["n"]
        if r["version"] is not None and r["state"] == "ready":
            by_version[str(r["version"])] = by_version.get(str(r["version"]), 0) + r["n"]
        by_state[r["state"]] = by_state.get(r["state"], 0) + r["n"]
        if r["status"] is not None:
            by_status[r["status"]] += r["n"]
    return FleetCounts(sum(by_state.values()), by_version, by_state, by_status, by_server)


async def get_by_database(conn: Conn, database: str, server: str = DEFAULT_SERVER) -> Tenant | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM tenants WHERE server = $1 AND database = $2", server, database)
    return None if row is None else _tenant(row)


async def count_by_server(conn: Conn, *, excluding: str | None = None) -> dict[str, int]:
    """Tenant rows per server, whatever their state (``excluding`` one tenant: the one being placed again)."""
    rows = await conn.fetch(
        "SELECT server, count(*) AS n FROM tenants WHERE $1::text IS NULL OR id <> $1 GROUP BY server", excluding
    )
    return {r["server"]: r["n"] for r in rows}


# -- drift (catalog_0002.sql) -------------------------------------------------------------------------------

# Checks kept per tenant: the newest is its drift status, a few before it show when drift appeared.
_DRIFT_CHECKS_KEPT: Final = 50
_DRIFT_COLUMNS: Final = "tenant_id, version, checked_at, clean, differences"


@dataclass(frozen=True, slots=True)
class DriftCheck:
    tenant_id: str
    version: int | None
    checked_at: datetime
    clean: bool
    differences: list[dict[str, Any]]


def _drift_check(row: asyncpg.Record) -> DriftCheck:
    values = dict(row)
    if isinstance(values["differences"], str):
        values["differences"] = json.loads(values["differences"])
    return DriftCheck(**values)


async def record_drift(
    conn: Conn, tenant_id: str, version: int | None, differences: list[dict[str, Any]]
) -> DriftCheck:
    row = await conn.fetchrow(
        f"""INSERT INTO drift_checks (tenant_id, version, clean, differences) VALUES ($1, $2, $3, $4::jsonb)
            RETURNING {_DRIFT_COLUMNS}""",
        tenant_id,
        version,
        not differences,
        json.dumps(differences),
    )
    assert row is not None
    await conn.execute(
        """DELETE FROM drift_checks WHERE tenant_id = $1
           AND id <= (SELECT id FROM drift_checks WHERE tenant_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)""",
        tenant_id,
        _DRIFT_CHECKS_KEPT,
    )
    return _drift_check(row)


async def latest_drift(conn: Conn, tenant_ids: list[str]) -> dict[str, DriftCheck]:
    """The newest drift check of each tenant that has one."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (tenant_id) {_DRIFT_COLUMNS} FROM drift_checks
            WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id, id DESC""",
        tenant_ids,
    )
    return {r["tenant_id"]: _drift_check(r) for r in rows}


async def expected_schemas(conn: Conn, keys: list[str]) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch("SELECT key, snapshot FROM expected_schemas WHERE key = ANY($1::text[])", keys)
    return {r["key"]: json.loads(r["snapshot"]) if isinstance(r["snapshot"], str) else r["snapshot"] for r in rows}


async def store_expected_schema(conn: Conn, key: str, version: int | None, snapshot: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO expected_schemas (key, version, snapshot) VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (key) DO NOTHING""",
        key,
        version,
        json.dumps(snapshot),
    )
