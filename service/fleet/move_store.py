"""The catalog queries of rollouts of moves (drain, rebalance; ``catalog_0010.sql``): the drains with their
rollout's counts, the tenants a drain or a rebalance moves, and a drain's late arrivals.

Same tables as :mod:`service.fleet.rollout_store` (a drain is a rollout); apart only to keep each module short.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.store.db import Conn


@dataclass(frozen=True, slots=True)
class Drain:
    """A server marked draining, and its drain (a rollout of moves; None for a mark left without one)."""

    server: str
    rollout_id: int | None
    state: str | None
    concurrency: int | None
    max_failures: int | None
    moved: int
    failed: int
    created_at: datetime | None
    finished_at: datetime | None
    # Each failed tenant's error, by id (from its rollout item).
    failures: dict[str, dict[str, Any]]


async def drains(conn: Conn, server: str | None = None) -> dict[str, Drain]:
    """The servers marked draining (only ``server`` when given), by name."""
    rows = await conn.fetch(
        """SELECT d.server, r.id AS rollout_id, r.state, r.concurrency, r.max_failures, r.created_at, r.finished_at,
                  count(t.tenant_id) FILTER (WHERE t.state = 'succeeded') AS moved,
                  count(t.tenant_id) FILTER (WHERE t.state = 'failed') AS failed,
                  coalesce(jsonb_object_agg(t.tenant_id, t.error) FILTER (WHERE t.state = 'failed'), '{}') AS failures
           FROM drains d LEFT JOIN rollouts r ON r.id = d.rollout_id
           LEFT JOIN rollout_tenants t ON t.rollout_id = r.id
           WHERE $1::text IS NULL OR d.server = $1
           GROUP BY d.server, r.id""",
        server,
    )
    found = {}
    for row in rows:
        values = dict(row)
        if isinstance(values["failures"], str):
            values["failures"] = json.loads(values["failures"])
        found[row["server"]] = Drain(**values)
    return found


async def running_drain(conn: Conn, server: str) -> tuple[int, bool] | None:
    """The server's running drain: its id and whether it was asked to stop (an undrain)."""
    row = await conn.fetchrow(
        "SELECT id, cancel_requested FROM rollouts WHERE kind = 'drain' AND server = $1 AND state = 'running'", server
    )
    return None if row is None else (row["id"], row["cancel_requested"])


async def on_server(conn: Conn, server: str) -> list[tuple[str, int | None]]:
    """The ready tenants of a server, in id order, with their version: what a drain moves."""
    rows = await conn.fetch("SELECT id, version FROM tenants WHERE server = $1 AND state = 'ready' ORDER BY id", server)
    return [(r["id"], r["version"]) for r in rows]


async def movable(conn: Conn) -> dict[str, list[str]]:
    """Per server, the tenants a rebalance may move: ready, database and role the service's own (not adopted),
    newest first (the last made are the first moved)."""
    rows = await conn.fetch(
        """SELECT server, id FROM tenants WHERE state = 'ready' AND database_owned AND role_owned
           ORDER BY server, created_at, id"""
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["server"], []).append(row["id"])
    return found


async def add_arrivals(conn: Conn, rollout_id: int, server: str) -> int:
    """Append to a drain the ready tenants on its server that it does not hold yet (placed there as it started, or
    back after a move was undone and retried elsewhere); return how many. None once the drain was asked to stop."""
    result: str = await conn.execute(
        """INSERT INTO rollout_tenants (rollout_id, position, tenant_id, from_version, canary)
           SELECT $1, (SELECT coalesce(max(position), 0) FROM rollout_tenants WHERE rollout_id = $1)
                      + row_number() OVER (ORDER BY t.id), t.id, t.version, false
           FROM tenants t
           WHERE t.server = $2 AND t.state = 'ready'
             AND NOT (SELECT cancel_requested FROM rollouts WHERE id = $1)
             AND NOT EXISTS (SELECT 1 FROM rollout_tenants x WHERE x.rollout_id = $1 AND x.tenant_id = t.id)""",
        rollout_id,
        server,
    )
    return int(result.split()[-1])


async def planned(conn: Conn, rollout_id: int) -> dict[str, str]:
    """The target servers a rebalance planned, by tenant id."""
    rows = await conn.fetch(
        "SELECT tenant_id, to_server FROM rollout_tenants WHERE rollout_id = $1 AND to_server IS NOT NULL", rollout_id
    )
    return {r["tenant_id"]: r["to_server"] for r in rows}
