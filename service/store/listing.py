"""The tenant list as the console shows it: searched, filtered by state, status, server or version, sorted, paged.

Catalog only (one statement per page), so it answers in milliseconds with 10,000 tenants; the status is the
catalog's (:data:`catalog.STATUS_SQL`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import asyncpg

from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import Conn


@dataclass(frozen=True, slots=True)
class Browse:
    """A filtered, sorted page of the tenant list (the console's); ``None`` filters nothing."""

    search: str | None = None
    state: str | None = None
    status: str | None = None
    server: str | None = None
    version: int | None = None
    sort: Literal["id", "version", "updated"] = "id"
    descending: bool = False
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True, slots=True)
class Listed:
    tenant: Tenant
    status: str | None  # the catalog's status (catalog.STATUS_SQL); None while provisioning or deleting


# Sort keys are chosen from this table, never spelled from input; id breaks ties so pages never overlap.
_ORDER: Final = {
    ("id", False): "id",
    ("id", True): "id DESC",
    ("version", False): "version NULLS FIRST, id",
    ("version", True): "version DESC NULLS LAST, id",
    ("updated", False): "updated_at, id",
    ("updated", True): "updated_at DESC, id",
}


async def browse(conn: Conn, query: Browse, latest: int | None) -> tuple[list[Listed], int]:
    """One page of tenants matching ``query`` and how many match in all (catalog only)."""
    rows = await _browse(conn, query, latest, query.offset, query.limit)
    if not rows and query.offset > 0:  # past the end: still say how many there are
        rows_at_start = await _browse(conn, query, latest, 0, 1)
        return [], rows_at_start[0]["total"] if rows_at_start else 0
    listed = [Listed(catalog.tenant_of(r), r["status"]) for r in rows]
    return listed, rows[0]["total"] if rows else 0


async def _browse(conn: Conn, query: Browse, latest: int | None, offset: int, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""WITH found AS (
               SELECT {catalog.TENANT_COLUMNS_T}, {catalog.STATUS_SQL} AS status
               FROM tenants t {catalog.NEWEST_DRIFT_SQL}
               WHERE ($2::text IS NULL OR strpos(t.id, $2) > 0) AND ($3::text IS NULL OR t.state = $3)
                 AND ($4::text IS NULL OR t.server = $4) AND ($5::int IS NULL OR t.version = $5)
           )
           SELECT *, count(*) OVER () AS total FROM found WHERE $6::text IS NULL OR status = $6
           ORDER BY {_ORDER[(query.sort, query.descending)]} OFFSET $7 LIMIT $8""",
        latest,
        query.search,
        query.state,
        query.server,
        query.version,
        query.status,
        offset,
        limit,
    )
