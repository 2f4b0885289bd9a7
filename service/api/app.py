"""The ASGI application: lifespan wiring (server, catalog, migration set, recovery) and the routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import Depends, FastAPI

from service import __version__
from service.api import httpmetrics, limits, problems
from service.api.auth import authorize
from service.api.routes import databases, drains, drift, fleet, lifecycle, rollouts, servers, system, tenants
from service.api.ui import install as install_console
from service.config import Settings
from service.fleet.rollouts import Rollouts
from service.fleet.servers import unconfigured
from service.history import layouts, migrations
from service.logs import valid_request_id
from service.schema.drift import upkeep
from service.store import catalog, isolation
from service.store.budget import Budgets, builder_ceiling, catalog_pool_size
from service.store.db import Server, Servers
from service.store.embedded import EmbeddedPostgres
from service.tenants import builders
from service.tenants.provisioner import Provisioner

log = logging.getLogger(__name__)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[str]:
    """The admin URL of the catalog's server: the configured one, else the embedded cluster for the app's life."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    embedded = EmbeddedPostgres(settings.data_dir, port=settings.embedded_port)
    dsn = await asyncio.to_thread(embedded.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(embedded.stop)


async def _provisioner(server: Server, migration_set: migrations.MigrationSet, settings: Settings) -> Provisioner:
    """Upgrade the catalog, configure the tenant servers, start recovery and the creation queue in the background
    (tenants nobody left in flight are served at once)."""
    async with server.catalog() as conn:
        await catalog.upgrade(conn)
    # Tenant servers are not contacted here: one that is down must not keep the others' tenants from service.
    tenant_servers = Servers.configure(server, settings.server_specs, settings.max_parallel + 1)
    async with server.catalog() as conn:
        for name, count in (await unconfigured(conn, tenant_servers)).items():
            log.warning("%d tenant(s) live on server %s, which is not configured: unreachable", count, name)
    await isolation.isolate(tenant_servers, settings.revoke_connect, embedded=settings.database_url is None)
    provisioner = Provisioner(tenant_servers, migration_set, settings)
    provisioner.start()
    return provisioner


def _builder(
    settings: Settings, dsn: str, provisioner: Provisioner, process: bool
) -> AbstractAsyncContextManager[object]:
    """The queue's builder process, when the queue workers run in one (``tenantctl serve``)."""
    if not process:
        return contextlib.nullcontext()
    return builders.Supervisor(settings, dsn, provisioner.queue_wakeup).running()


def _lifespan(settings: Settings, queue_process: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    # With a builder process, this one runs no queue worker and lends the child its connections.
    lent = builder_ceiling(settings.queue_workers) if queue_process else 0
    here = settings.model_copy(update={"queue_workers": 0}) if queue_process else settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Refuse to start on a broken folder before anything else happens.
        migration_set = layouts.load(
            settings.migrations_dir,
            settings.seeds_path,
            layout=settings.layout,
            journal=settings.journal,
            tool_table=settings.tool_table,
        )
        for warning in migration_set.warnings:
            log.warning("migrations: %s", warning)
        if not settings.auth_enabled:
            log.warning("no TENANTS_ADMIN_TOKEN/TENANTS_READ_TOKEN set: the API is open; serve on loopback only")
        async with _database(settings) as dsn:
            budgets = Budgets(
                settings.connection_share, settings.connection_ceiling, settings.connection_wait,
                parallel=settings.max_parallel, lent=lent,
            )  # fmt: skip
            pool_size = await catalog_pool_size(budgets, dsn, settings)
            server = Server(dsn, settings.catalog_database, pool_size, budgets)
            try:
                await server.open()
                provisioner = await _provisioner(server, migration_set, here)
                app.state.provisioner = provisioner
                app.state.rollouts = fleet_rollouts = Rollouts(provisioner, settings.rollout_poll_interval)
                try:
                    async with (
                        upkeep(provisioner.drift, settings.drift_interval, settings.drift_concurrency),
                        fleet_rollouts.running(),
                        _builder(settings, dsn, provisioner, queue_process),
                    ):
                        yield
                finally:
                    await provisioner.close()
            finally:
                await server.close()

    return lifespan


def create_app(settings: Settings, *, queue_process: bool = False) -> FastAPI:
    """Build the app; nothing touches a database until the lifespan starts. ``queue_process``: the queue workers
    run in a child process the app supervises (:mod:`service.tenants.builders`), not in its event loop."""
    app = FastAPI(
        title="tenant-provisioner",
        version=__version__,
        summary="Creates, migrates and inspects per-tenant PostgreSQL databases.",
        lifespan=_lifespan(settings, queue_process),
        dependencies=[Depends(limits.known_query)],
    )
    app.state.settings = settings
    problems.install(app)
    app.add_middleware(limits.BodyLimit)
    # Outermost: the request id exists before anything else logs, and is returned on every answer.
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=valid_request_id)
    httpmetrics.install(app)
    guarded = {"dependencies": [Depends(authorize)], "responses": problems.responses(401, 403)}
    app.include_router(tenants.router, **guarded)  # type: ignore[arg-type]
    app.include_router(lifecycle.router, **guarded)  # type: ignore[arg-type]
    app.include_router(system.protected, **guarded)  # type: ignore[arg-type]
    app.include_router(fleet.router, **guarded)  # type: ignore[arg-type]
    app.include_router(drift.router, **guarded)  # type: ignore[arg-type]
    app.include_router(databases.router, **guarded)  # type: ignore[arg-type]
    app.include_router(rollouts.router, **guarded)  # type: ignore[arg-type]
    app.include_router(servers.router, **guarded)  # type: ignore[arg-type]
    app.include_router(drains.router, **guarded)  # type: ignore[arg-type]
    app.include_router(drains.rebalance_router, **guarded)  # type: ignore[arg-type]
    app.include_router(system.router)
    install_console(app)
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.problem_only(limits.document(build_openapi()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
