"""The catalog's rollout tables (``catalog_0004.sql``): a rollout, and the state of each tenant in it.

Functions take a connection (the caller owns transactions and locks), like :mod:`service.catalog`; the rollout
queries live apart from it because they are one concern that only :mod:`service.rollout` uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import asyncpg

from service.store.db import LOCK_NAMESPACE, Conn

RolloutState = Literal["running", "succeeded", "failed", "cancelled"]
# migrate: bring tenants to a version; drain, rebalance: move tenants between servers (catalog_0010.sql).
Kind = Literal["migrate", "drain", "rebalance"]
ItemState = Literal["pending", "running", "succeeded", "failed", "skipped"]

_SUMMARY: Final = """
    SELECT r.id, r.kind, r.server, r.state, r.to_version, r.concurrency, r.canary, r.max_failures, r.actor,
           r.cancel_requested, r.created_at, r.finished_at,
           count(t.tenant_id) AS total,
           count(*) FILTER (WHERE t.state = 'succeeded') AS done,
           count(*) FILTER (WHERE t.state = 'failed') AS failed,
           count(*) FILTER (WHERE t.state = 'skipped') AS skipped,
           count(*) FILTER (WHERE t.state = 'running') AS running,
           count(*) FILTER (WHERE t.state = 'pending') AS pending
    FROM rollouts r LEFT JOIN rollout_tenants t ON t.rollout_id = r.id"""


@dataclass(frozen=True, slots=True)
class Item:
    tenant_id: str
    position: int
    canary: bool
    from_version: int | None
    state: ItemState
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: dict[str, Any] | None
    to_server: str | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    id: int
    kind: Kind
    server: str | None
    state: RolloutState
    to_version: int | None
    concurrency: int
    canary: int
    max_failures: int
    actor: str
    cancel_requested: bool
    created_at: datetime
    finished_at: datetime | None
    total: int
    done: int
    failed: int
    skipped: int
    running: int
    pending: int
    # Filled by a read of one rollout; a list of rollouts leaves it empty.
    tenants: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    """What the driver reads before starting each tenant."""

    cancel_requested: bool
    failed: int
    canary_failed: int
    pending: int


def _item(row: asyncpg.Record) -> Item:
    values = dict(row)
    if isinstance(values["error"], str):
        values["error"] = json.loads(values["error"])
    return Item(**values)


async def running_ids(conn: Conn, kind: Kind | None = None) -> list[int]:
    """The running rollouts (of one kind, when given)."""
    rows = await conn.fetch(
        "SELECT id FROM rollouts WHERE state = 'running' AND ($1::text IS NULL OR kind = $1) ORDER BY id", kind
    )
    return [r["id"] for r in rows]


async def candidates(conn: Conn, target: int, only: Sequence[str] | None) -> list[tuple[str, int | None]]:
    """Ready tenants below ``target`` (among ``only`` when given), in id order, with their recorded version."""
    rows = await conn.fetch(
        """SELECT id, version FROM tenants
           WHERE state = 'ready' AND (version IS NULL OR version < $1)
             AND ($2::text[] IS NULL OR id = ANY($2::text[]))
           ORDER BY id""",
        target,
        None if only is None else list(only),
    )
    return [(r["id"], r["version"]) for r in rows]


async def unknown_tenants(conn: Conn, ids: Sequence[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT u.id FROM unnest($1::text[]) AS u(id) WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = u.id)",
        list(ids),
    )
    return [r["id"] for r in rows]


async def insert(
    conn: Conn,
    *,
    to_version: int | None,
    concurrency: int,
    canary: int,
    max_failures: int,
    actor: str,
    tenants: Sequence[tuple[str, int | None]],
    kind: Kind = "migrate",
    server: str | None = None,
    to_servers: Sequence[str | None] | None = None,
) -> int:
    """Record a rollout and its tenants in run order (a move's target server beside each, when planned); one with
    no tenants ends ``succeeded`` at once.

    Raises asyncpg's unique violation when another rollout of its kind (and drained server) is running
    (``rollouts_one_running_idx``), also for one with no tenants: it is inserted ``running`` first, so the answer
    never depends on what the fleet holds.
    """
    rollout_id: int = await conn.fetchval(
        """INSERT INTO rollouts (state, to_version, concurrency, canary, max_failures, actor, kind, server)
           VALUES ('running', $1, $2, $3, $4, $5, $6, $7) RETURNING id""",
        to_version,
        concurrency,
        canary,
        max_failures,
        actor,
        kind,
        server,
    )
    await conn.execute(
        """INSERT INTO rollout_tenants (rollout_id, position, tenant_id, from_version, canary, to_server)
           SELECT $1, u.position, u.tenant_id, u.version, u.position <= $4, u.to_server
           FROM unnest($2::text[], $3::integer[], $5::text[])
                WITH ORDINALITY AS u(tenant_id, version, to_server, position)""",
        rollout_id,
        [t for t, _ in tenants],
        [v for _, v in tenants],
        canary,
        list(to_servers) if to_servers is not None else [None] * len(tenants),
    )
    if not tenants:
        await finish(conn, rollout_id, "succeeded")
    return rollout_id


async def get(conn: Conn, rollout_id: int, *, with_tenants: bool = True) -> Rollout | None:
    row = await conn.fetchrow(f"{_SUMMARY} WHERE r.id = $1 GROUP BY r.id", rollout_id)
    if row is None:
        return None
    if not with_tenants:
        return Rollout(**dict(row))
    items = await conn.fetch(
        """SELECT tenant_id, position, canary, from_version, state, attempts, started_at, finished_at, duration_ms,
                  error, to_server
           FROM rollout_tenants WHERE rollout_id = $1 ORDER BY position""",
        rollout_id,
    )
    return Rollout(**dict(row), tenants=tuple(_item(r) for r in items))


async def page(conn: Conn, *, before: int | None, limit: int) -> list[Rollout]:
    """Rollouts newest first, without their tenants."""
    rows = await conn.fetch(
        f"{_SUMMARY} WHERE ($1::integer IS NULL OR r.id < $1) GROUP BY r.id ORDER BY r.id DESC LIMIT $2",
        before,
        limit,
    )
    return [Rollout(**dict(r)) for r in rows]


async def progress(conn: Conn, rollout_id: int) -> Progress:
    row = await conn.fetchrow(
        """SELECT r.cancel_requested,
                  count(*) FILTER (WHERE t.state = 'failed') AS failed,
                  count(*) FILTER (WHERE t.state = 'failed' AND t.canary) AS canary_failed,
                  count(*) FILTER (WHERE t.state = 'pending') AS pending
           FROM rollouts r LEFT JOIN rollout_tenants t ON t.rollout_id = r.id
           WHERE r.id = $1 GROUP BY r.id""",
        rollout_id,
    )
    assert row is not None
    return Progress(**dict(row))


async def requeue_interrupted(conn: Conn, rollout_id: int) -> int:
    """Put back to ``pending`` the tenants a dead driver left ``running``; return how many."""
    result: str = await conn.execute(
        "UPDATE rollout_tenants SET state = 'pending' WHERE rollout_id = $1 AND state = 'running'", rollout_id
    )
    return int(result.split()[-1])


async def pending(conn: Conn, rollout_id: int, *, canary: bool) -> list[str]:
    rows = await conn.fetch(
        """SELECT tenant_id FROM rollout_tenants WHERE rollout_id = $1 AND state = 'pending' AND canary = $2
           ORDER BY position""",
        rollout_id,
        canary,
    )
    return [r["tenant_id"] for r in rows]


_CLAIM: Final = """
    UPDATE rollout_tenants SET state = 'running', started_at = now(), finished_at = NULL, error = NULL,
           attempts = attempts + 1,
           from_version = CASE WHEN attempts = 0
                               THEN (SELECT version FROM tenants WHERE id = tenant_id) ELSE from_version END
    WHERE rollout_id = $1 AND tenant_id = ANY($2::text[])
      AND NOT (SELECT cancel_requested FROM rollouts WHERE id = $1)
    RETURNING tenant_id"""
# The same for one tenant, $4, inside record's statement.
_CLAIM_ONE: Final = _CLAIM.replace("$2::text[]", "ARRAY[$4::text]")


async def claim(conn: Conn, rollout_id: int, tenant_ids: Sequence[str]) -> list[str]:
    """Mark tenants ``running`` before they are touched, unless the rollout was asked to cancel (then none);
    return those claimed, in the order given.

    A tenant's level is taken on its first attempt only (a retry after a crash may find it partly or wholly
    migrated by the attempt that died)."""
    rows = await conn.fetch(
        _CLAIM,
        rollout_id,
        list(tenant_ids),
    )
    claimed = {r["tenant_id"] for r in rows}
    return [t for t in tenant_ids if t in claimed]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A tenant's result (:func:`record`). When its level was read (``touched``) the catalog takes ``version`` and
    ``migration_error``; when files were applied (``ran``) its ``migrate`` operation is recorded too."""

    tenant_id: str
    state: ItemState
    duration_ms: float | None = None
    error: dict[str, Any] | None = None
    touched: bool = False
    version: int | None = None
    ran: bool = False
    from_version: int | None = None
    migration_error: dict[str, Any] | None = None
    started_at: datetime | None = None
    to_server: str | None = None  # a move's: where the tenant went


async def record(
    conn: Conn,
    rollout_id: int,
    actor: str,
    outcomes: Sequence[Outcome],
    *,
    claim_next: str | None = None,
    unlock: Sequence[str] = (),
) -> bool:
    """Record tenants' outcomes in one statement: their rollout state, their level in ``tenants`` and their
    ``migrate`` operation (its start and end at once: the run is over).

    The same statement claims the worker's next tenant as :func:`claim` does (return whether it could: not after
    a cancel), and releases the advisory locks of ``unlock`` (tenant ids): one round trip where three were.
    """
    rows = [
        {
            "tenant_id": o.tenant_id,
            "state": o.state,
            "duration_ms": o.duration_ms,
            "error": o.error,
            "touched": o.touched,
            "version": o.version,
            "ran": o.ran,
            "from_version": o.from_version,
            "migration_error": o.migration_error,
            "started_at": None if o.started_at is None else o.started_at.isoformat(),
            "to_server": o.to_server,
        }
        for o in outcomes
    ]
    claimed = await conn.fetchval(
        f"""WITH o AS (
               SELECT * FROM jsonb_to_recordset($2::text::jsonb) AS o(
                   tenant_id text, state text, duration_ms double precision, error jsonb, touched boolean,
                   version integer, ran boolean, from_version integer, migration_error jsonb, started_at timestamptz,
                   to_server text)
           ), items AS (
               UPDATE rollout_tenants t
               SET state = o.state, duration_ms = o.duration_ms, error = o.error, finished_at = now(),
                   to_server = coalesce(o.to_server, t.to_server)
               FROM o WHERE t.rollout_id = $1 AND t.tenant_id = o.tenant_id
           ), levels AS (
               UPDATE tenants SET version = o.version, error = o.migration_error, updated_at = now()
               FROM o WHERE tenants.id = o.tenant_id AND o.touched
           ), operations AS (
               INSERT INTO operations (tenant_id, kind, actor, state, started_at, finished_at, detail, error)
               SELECT tenant_id, 'migrate', $3,
                      CASE WHEN migration_error IS NULL THEN 'succeeded' ELSE 'failed' END,
                      started_at, now(), jsonb_build_object('from', from_version), migration_error
               FROM o WHERE ran
           ), claimed AS ({_CLAIM_ONE}
           ), unlocked AS (
               SELECT pg_advisory_unlock($6, hashtext(id)) FROM unnest($5::text[]) AS u(id)
           )
           SELECT (SELECT count(*) FROM claimed) > 0, (SELECT count(*) FROM unlocked)""",
        rollout_id,
        json.dumps(rows),
        actor,
        claim_next,
        list(unlock),
        LOCK_NAMESPACE,
    )
    return bool(claimed)


async def migrated(conn: Conn, rollout_id: int) -> list[str]:
    """The tenants a rollout migrated, canaries left out (each was checked for drift as it ran)."""
    rows = await conn.fetch(
        """SELECT tenant_id FROM rollout_tenants WHERE rollout_id = $1 AND state = 'succeeded' AND NOT canary
           ORDER BY position""",
        rollout_id,
    )
    return [r["tenant_id"] for r in rows]


async def request_cancel(conn: Conn, rollout_id: int) -> bool:
    """Ask the driver to stop; False when the rollout is not running (or does not exist)."""
    row = await conn.fetchval(
        "UPDATE rollouts SET cancel_requested = true WHERE id = $1 AND state = 'running' RETURNING id", rollout_id
    )
    return row is not None


async def finish(conn: Conn, rollout_id: int, state: RolloutState) -> None:
    """End a rollout: tenants never started are ``skipped``."""
    await conn.execute(
        "UPDATE rollout_tenants SET state = 'skipped' WHERE rollout_id = $1 AND state = 'pending'", rollout_id
    )
    await conn.execute("UPDATE rollouts SET state = $2, finished_at = now() WHERE id = $1", rollout_id, state)


async def duration_buckets(conn: Conn, bounds: Sequence[float]) -> tuple[list[int], int, float]:
    """Tenants migrated by rollouts (succeeded or failed; moves of a drain or a rebalance left out): cumulative counts
    at each bound in seconds, the count and the sum of seconds, as a Prometheus histogram wants them."""
    rows = await conn.fetch(
        """SELECT b.le, count(t.duration_ms) AS n
           FROM unnest($1::double precision[]) AS b(le)
           LEFT JOIN (rollout_tenants t JOIN rollouts r ON r.id = t.rollout_id AND r.kind = 'migrate')
                  ON t.state IN ('succeeded', 'failed') AND t.duration_ms <= b.le * 1000
           GROUP BY b.le ORDER BY b.le""",
        list(bounds),
    )
    total = await conn.fetchrow(
        """SELECT count(*) AS n, coalesce(sum(duration_ms), 0) / 1000 AS seconds
           FROM rollout_tenants t JOIN rollouts r ON r.id = t.rollout_id AND r.kind = 'migrate'
           WHERE t.state IN ('succeeded', 'failed') AND t.duration_ms IS NOT NULL"""
    )
    assert total is not None
    return [r["n"] for r in rows], total["n"], float(total["seconds"])
