"""The tenant list as the console shows it: searched, filtered by state, status, server or version, sorted, paged.

Catalog only (one statement per page), so it answers in milliseconds with 10,000 tenants; the status is the
catalog's (:data:`catalog.STATUS_SQL`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

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


def _where(first: int) -> str:
    """The filters other than status, their parameters numbered from ``first`` (search, state, server, version)."""
    a, b, c, d = (f"${n}" for n in range(first, first + 4))
    return (
        f"({a}::text IS NULL OR strpos(t.id, {a}) > 0) AND ({b}::text IS NULL OR t.state = {b})"
        f" AND ({c}::text IS NULL OR t.server = {c}) AND ({d}::int IS NULL OR t.version = {d})"
    )


async def browse(conn: Conn, query: Browse, latest: int | None) -> tuple[list[Listed], int]:
    """One page of tenants matching ``query`` and how many match in all (catalog only).

    Without a status filter the page is cut from the tenants first and only its rows get a status; a status filter
    needs the status of every tenant the other filters keep.
    """
    filters = (query.search, query.state, query.server, query.version)
    order = _ORDER[(query.sort, query.descending)]
    if query.status is None:
        total: int = await conn.fetchval(f"SELECT count(*) FROM tenants t WHERE {_where(1)}", *filters)
        rows = await conn.fetch(
            f"""SELECT {catalog.TENANT_COLUMNS_T}, {catalog.STATUS_SQL} AS status
                FROM (SELECT * FROM tenants t WHERE {_where(2)} ORDER BY {order} OFFSET $6 LIMIT $7) t
                ORDER BY {order}""",
            latest,
            *filters,
            query.offset,
            query.limit,
        )
        return [Listed(catalog.tenant_of(r), r["status"]) for r in rows], total
    found = f"SELECT {catalog.TENANT_COLUMNS_T}, {catalog.STATUS_SQL} AS status FROM tenants t WHERE {_where(2)}"
    rows = await conn.fetch(
        f"""SELECT *, count(*) OVER () AS total FROM ({found}) f WHERE status = $6
            ORDER BY {order} OFFSET $7 LIMIT $8""",
        latest,
        *filters,
        query.status,
        query.offset,
        query.limit,
    )
    if not rows and query.offset > 0:  # past the end: still say how many there are
        counted = f"SELECT count(*) FROM ({found}) f WHERE status = $6"
        return [], await conn.fetchval(counted, latest, *filters, query.status)
    return [Listed(catalog.tenant_of(r), r["status"]) for r in rows], rows[0]["total"] if rows else 0
