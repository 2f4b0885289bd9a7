"""The catalog's queue of asynchronous creations (``catalog_0009.sql``): a ``queued`` tenant row and its
``create_queue`` row, oldest first. Functions take a connection; the caller owns transactions and locks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import LOCK_NAMESPACE, Conn


@dataclass(frozen=True, slots=True)
class Job:
    """A queued creation: the request (name, seed, strategy) and the verifier of the password its 202 answered."""

    tenant_id: str
    request: dict[str, Any]
    role_verifier: str
    attempts: int


# A new tenant and its queue entry in one statement (one round trip, atomic without BEGIN/COMMIT): nothing when the
# id exists, its lock is held or the server is draining (the caller then takes the general path, which says why).
_ENQUEUE_NEW: Final = f"""
WITH new AS (
    INSERT INTO tenants AS t (id, name, database, state, request_sha256, server)
    SELECT $1, $2, $3, 'queued', $4, $5
    WHERE NOT EXISTS (SELECT 1 FROM drains WHERE server = $5) AND pg_try_advisory_xact_lock($8, hashtext($1))
    ON CONFLICT (id) DO NOTHING
    RETURNING {catalog.TENANT_COLUMNS_T}
), q AS (
    INSERT INTO create_queue (tenant_id, request, role_verifier) SELECT id, $6::jsonb, $7 FROM new
)
SELECT * FROM new"""


async def enqueue_new(
    conn: Conn,
    tenant_id: str,
    name: str,
    database: str,
    request_sha256: str,
    server: str,
    request: dict[str, Any],
    role_verifier: str,
) -> Tenant | None:
    """Insert a new ``queued`` tenant with its queue entry; None when the id exists or is locked, or the server is
    draining."""
    row = await conn.fetchrow(
        _ENQUEUE_NEW,
        tenant_id,
        name,
        database,
        request_sha256,
        server,
        json.dumps(request),
        role_verifier,
        LOCK_NAMESPACE,
    )
    return None if row is None else catalog.tenant_of(row)


async def enqueue(conn: Conn, tenant_id: str, request: dict[str, Any], role_verifier: str) -> None:
    await conn.execute(
        """INSERT INTO create_queue (tenant_id, request, role_verifier) VALUES ($1, $2::jsonb, $3)
           ON CONFLICT (tenant_id) DO UPDATE SET request = EXCLUDED.request, role_verifier = EXCLUDED.role_verifier,
               attempts = 0, queued_at = now()""",
        tenant_id,
        json.dumps(request),
        role_verifier,
    )


async def job(conn: Conn, tenant_id: str) -> Job | None:
    row = await conn.fetchrow(
        "SELECT tenant_id, request, role_verifier, attempts FROM create_queue WHERE tenant_id = $1", tenant_id
    )
    if row is None:
        return None
    values = dict(row)
    values["request"] = json.loads(values["request"])
    return Job(**values)


async def next_queued(conn: Conn, limit: int) -> list[str]:
    """The first ``limit`` queued tenants, oldest first (workers try their locks in this order)."""
    rows = await conn.fetch(
        """SELECT q.tenant_id FROM create_queue q JOIN tenants t ON t.id = q.tenant_id
           WHERE t.state = 'queued' ORDER BY q.seq LIMIT $1""",
        limit,
    )
    return [r["tenant_id"] for r in rows]


async def start_job(conn: Conn, tenant_id: str) -> Tenant:
    """``queued`` → ``provisioning``, counting the attempt."""
    await conn.execute(
        """WITH q AS (UPDATE create_queue SET attempts = attempts + 1 WHERE tenant_id = $1)
           UPDATE tenants SET state = 'provisioning', updated_at = now() WHERE id = $1""",
        tenant_id,
    )
    tenant = await catalog.get(conn, tenant_id)
    assert tenant is not None
    return tenant


async def requeue(conn: Conn, tenant_id: str) -> None:
    await conn.execute(
        "UPDATE tenants SET state = 'queued', error = NULL, updated_at = now() WHERE id = $1 AND state <> 'ready'",
        tenant_id,
    )


async def dequeue(conn: Conn, tenant_id: str) -> None:
    await conn.execute("DELETE FROM create_queue WHERE tenant_id = $1", tenant_id)


async def queue_position(conn: Conn, tenant_id: str) -> int | None:
    """1 for the next queued creation to start; None when the tenant is not queued."""
    position: int | None = await conn.fetchval(
        """SELECT CASE WHEN t.state = 'queued' THEN (
                   SELECT count(*) + 1 FROM create_queue q2 JOIN tenants t2 ON t2.id = q2.tenant_id
                   WHERE t2.state = 'queued' AND q2.seq < q.seq) END
           FROM create_queue q JOIN tenants t ON t.id = q.tenant_id WHERE q.tenant_id = $1""",
        tenant_id,
    )
    return position
