"""Reading tenants without changing them: one tenant, a page, the fleet counts, a tenant's schema level."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, replace

import asyncpg

from service.errors import DatabaseUnavailable, TenantNotFound, TenantNotReady
from service.history import table as history
from service.history.table import Applied, Progress
from service.identifiers import validate_tenant_id
from service.store import catalog
from service.store import queue as queue_store
from service.store.budget import Pressure
from service.store.catalog import Tenant
from service.store.db import INVALID_CATALOG_NAME, sqlstate
from service.store.listing import Browse, Listed
from service.store.listing import browse as browse_catalog
from service.tenants.context import Context
from service.tenants.status import SchemaStatus, compute

# Tenant databases read at once when a list is filtered by schema status.
_STATUS_READS = 8


async def ping(ctx: Context) -> list[Pressure]:
    """Each server's connection budget; DatabaseUnavailable unless the catalog answers within a few seconds and no
    server's budget is spent with requests waiting for it."""
    async with ctx.server.catalog() as conn:
        await conn.fetchval("SELECT 1", timeout=5)
    budgets = {id(b): b for b in [ctx.server.budget, *(t.budget for t in ctx.servers)]}.values()
    pressure = [b.pressure() for b in budgets]
    spent = [p.server for p in pressure if p.spent]
    if spent:
        raise DatabaseUnavailable(
            f"connection budget spent on server {', '.join(spent)}: requests are waiting for a connection",
            reason="connection_budget",
            connections=[asdict(p) for p in pressure],
        )
    return pressure


async def get(ctx: Context, tenant_id: str) -> Tenant:
    validate_tenant_id(tenant_id)
    async with ctx.server.catalog() as conn:
        tenant = await catalog.get(conn, tenant_id)
        if tenant is not None and tenant.state == "queued":
            tenant = replace(tenant, queue_position=await queue_store.queue_position(conn, tenant_id))
    if tenant is None:
        raise TenantNotFound(tenant=tenant_id)
    return tenant


async def events(ctx: Context, tenant_id: str, limit: int) -> list[catalog.Event]:
    """The audit trail of a tenant, also after it was deleted; TenantNotFound when there is none."""
    validate_tenant_id(tenant_id)
    async with ctx.server.catalog() as conn:
        found = await catalog.events(conn, tenant_id, limit)
        if not found and await catalog.get(conn, tenant_id) is None:
            raise TenantNotFound(tenant=tenant_id)
    return found


async def page(ctx: Context, *, state: str | None, after: str | None, limit: int) -> list[Tenant]:
    async with ctx.server.catalog() as conn:
        return await catalog.page(conn, state=state, after=after, limit=limit)


async def browse(ctx: Context, query: Browse) -> tuple[list[Listed], int]:
    """A page of the console's tenant list and how many tenants match (catalog only)."""
    async with ctx.server.catalog() as conn:
        return await browse_catalog(conn, query, ctx.migrations.latest_version)


async def page_by_status(
    ctx: Context, status: str, *, state: str | None, after: str | None, limit: int
) -> tuple[Sequence[Tenant], str | None]:
    """Tenants of one catalog page whose live schema status is ``status``, and the id to continue after.

    The catalog knows only version and error, so every tenant of the page is judged live: a connection to its
    database, a history read and a drift-record read per tenant, at most ``_STATUS_READS`` at a time. To bound
    a request's cost at ``limit`` tenants, a page may hold fewer matches than ``limit``, or none, while more
    tenants follow; the id is ``None`` only when the catalog has no more.
    """
    rows = await page(ctx, state=state, after=after, limit=limit + 1)
    first = rows[:limit]
    gate = asyncio.Semaphore(_STATUS_READS)

    async def judge(tenant: Tenant) -> SchemaStatus | None:
        async with gate:
            try:
                return await _status_of(ctx, tenant)
            except asyncpg.PostgresError as exc:
                if sqlstate(exc) == INVALID_CATALOG_NAME:  # deleted since the page was read
                    return None
                raise

    found = await asyncio.gather(*(judge(t) for t in first))
    matches = [t for t, s in zip(first, found, strict=True) if s is not None and s.status == status]
    return matches, first[-1].id if len(rows) > limit else None


async def schema(ctx: Context, tenant_id: str) -> SchemaStatus:
    """The tenant's level, read live from its own history table (or from memory, see :func:`_applied`)."""
    tenant = await get(ctx, tenant_id)
    found = await _status_of(ctx, tenant)
    if found is None:
        raise TenantNotReady(f"tenant is {tenant.state}", tenant=tenant.id, state=tenant.state)
    return found


async def _status_of(ctx: Context, tenant: Tenant) -> SchemaStatus | None:
    """``None`` while the tenant has no schema to judge (provisioning, deleting)."""
    if tenant.state == "failed":
        return compute(tenant.id, tenant.database, [], ctx.migrations, error=tenant.error)
    if tenant.state != "ready":
        return None
    applied, partial = await _applied(ctx, tenant)
    drift = await ctx.drift.latest(tenant.id)
    return compute(
        tenant.id, tenant.database, applied, ctx.migrations, error=tenant.error, drift=drift, partial=partial
    )


async def _applied(ctx: Context, tenant: Tenant) -> tuple[list[Applied], Progress | None]:
    """A ready tenant's history, for reads: through a kept connection (see store.connections), or from memory when
    ``schema_cache_seconds`` allows. Every change the service makes to a tenant, on any replica, moves its
    ``updated_at`` in the catalog: the stamp of its cached history."""

    async def load() -> tuple[list[Applied], Progress | None]:
        return await ctx.connections.run(ctx.target(tenant), tenant.database, history.read_state)

    if ctx.levels is None:
        return await load()
    return await ctx.levels.get(tenant.id, (tenant.database, tenant.server, tenant.updated_at), load)
