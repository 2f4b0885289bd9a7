"""What every tenant operation does around its work: take the tenant's lock, and record the operation in the
audit trail with its outcome. One place, so every operation is locked and recorded the same way."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from service import logs
from service.errors import ServiceError, TenantNotFound, TenantNotReady
from service.identifiers import validate_tenant_id
from service.store import catalog
from service.store.catalog import Tenant
from service.store.db import Conn, as_unavailable
from service.store.locks import Lease
from service.tenants.context import Context


def error_dict(exc: ServiceError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, **exc.details}


def require_ready(tenant_id: str, tenant: Tenant | None) -> Tenant:
    """The tenant; TenantNotFound, or TenantNotReady unless it is ``ready``."""
    if tenant is None:
        raise TenantNotFound(tenant=tenant_id)
    if tenant.state != "ready":
        raise TenantNotReady(f"tenant is {tenant.state}", tenant=tenant_id, state=tenant.state)
    return tenant


async def ready(conn: Conn, tenant_id: str) -> Tenant:
    """The tenant, read under its lock; TenantNotFound, or TenantNotReady unless it is ``ready``."""
    return require_ready(tenant_id, await catalog.get(conn, tenant_id))


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


@asynccontextmanager
async def locked(ctx: Context, tenant_id: str) -> AsyncIterator[Lease]:
    """The tenant's lock (validated id first; TenantBusy past the bound), released whatever happens inside."""
    validate_tenant_id(tenant_id)
    logs.tenant.set(tenant_id)
    lease = await ctx.locks.acquire(tenant_id)
    try:
        yield lease
    finally:
        await lease.release()


@asynccontextmanager
async def recorded(conn: Conn, tenant_id: str, kind: str, detail: dict[str, Any] | None = None) -> AsyncIterator[int]:
    """An operation in the audit trail: begun now, ended with its error or with success (the tenant's ``last_error``
    with it). An error that is not a ServiceError is recorded as the outage it is, else ``internal_error``, so that a
    background move or backup says why it failed; if the catalog cannot take that record, the original error still
    propagates and recovery closes the operation later."""
    op = await catalog.begin_operation(conn, tenant_id, kind, detail)
    try:
        yield op
    except ServiceError as exc:
        await catalog.end_operation(conn, op, error_dict(exc))
        raise
    except Exception as exc:
        unavailable = as_unavailable(exc)
        why = {"code": "internal_error", "message": f"{type(exc).__name__} (the service log has the traceback)"}
        error = error_dict(unavailable) if unavailable is not None else why
        with contextlib.suppress(Exception):
            await catalog.end_operation(conn, op, error)
        raise
    await catalog.end_operation(conn, op)
