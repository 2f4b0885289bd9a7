"""What every tenant operation works with: the servers, the files, the settings, the tenant locks, and the
few helpers they share (the tenant's server, a connection that runs migrations, the crash failpoint).

One :class:`Context` is built at start and handed to each operation; nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

import asyncpg

from service.config import Settings
from service.history.migrations import MigrationSet
from service.history.table import Applied, Progress
from service.schema.drift import DriftChecker
from service.schema.template import Template
from service.store import catalog
from service.store.connections import TenantConnections
from service.store.db import Server, Servers, Target
from service.store.locks import TenantLocks
from service.tenants.cache import Recent, Revalidating

log = logging.getLogger(__name__)

# Tenants whose history is kept in memory when schema_cache_seconds > 0 (a few kB each).
_LEVELS_KEPT = 20_000


class Context:
    """The domain core's I/O, given as arguments. ``servers`` may be the catalog's :class:`Server` alone: the
    tenant servers then come from the settings."""

    def __init__(self, servers: Servers | Server, migrations: MigrationSet, settings: Settings) -> None:
        if isinstance(servers, Server):
            servers = Servers.configure(servers, settings.server_specs, settings.max_parallel + 1)
        self.servers = servers
        self.server = servers.catalog  # the catalog, and the locks
        self.migrations = migrations
        self.settings = settings
        self.locks = TenantLocks(self.server, settings.busy_timeout, settings.max_parallel)
        self.background: set[asyncio.Task[None]] = set()
        # Set by an enqueue in this process so an idle queue worker starts at once (see .queue).
        self.queue_wakeup = asyncio.Event()
        self.fleet_counts = Recent(self._count_fleet, settings.fleet_cache_seconds)
        self.connections = TenantConnections(settings.tenant_connections, settings.tenant_connection_idle)
        for budget in {id(b): b for b in [servers.catalog.budget, *(t.budget for t in servers)]}.values():
            budget.on_spent(self.connections.reclaim)
        # Tenants' applied histories for status reads, when allowed to be a little old (schema_cache_seconds).
        self.levels: Revalidating[tuple[list[Applied], Progress | None]] | None = None
        if settings.schema_cache_seconds > 0:
            self.levels = Revalidating(settings.schema_cache_seconds, _LEVELS_KEPT)
        self.drift = DriftChecker(servers, migrations, settings, self.locks, self.connections)
        # The clone strategy's template database on each server, built on first use (service.schema.template).
        self.templates = {t.name: self._template_on(t) for t in servers}

    def _template_on(self, target: Target) -> Template:
        catalog_database = self.settings.catalog_database
        return Template(
            target.connect,
            self.migrations,
            self.drift.expected_for(target.name),
            catalog_database=catalog_database,
            admin_database=target.maintenance_database,
            lock_connect=lambda: self.server.connect(catalog_database),
            server_key=target.name,
            server_settings=self.server_settings(),
            failpoint=self.failpoint,
        )

    @property
    def template(self) -> Template:
        """The template of the first server (the only one unless several are configured)."""
        return self.templates[self.servers.first.name]

    def target(self, tenant: catalog.Tenant) -> Target:
        """The server the tenant lives on; DatabaseUnavailable when it is no longer configured."""
        return self.servers.target(tenant.server)

    async def connect(self, tenant: catalog.Tenant) -> asyncpg.Connection:
        """A new connection to the tenant's database, for work that changes it (reads use ``self.connections``)."""
        return await self.target(tenant).connect(tenant.database, server_settings=self.server_settings())

    def server_settings(self) -> dict[str, str]:
        """Session settings of a connection that runs migrations."""
        settings: dict[str, str] = {}
        if self.settings.statement_timeout:
            settings["statement_timeout"] = str(int(self.settings.statement_timeout * 1000))
        return settings

    def failpoint(self, name: str) -> None:
        """Test-only: die here, as a crash would, when TENANTS_FAILPOINT names this step."""
        if self.settings.failpoint == name:
            log.error("failpoint %s: killing the process", name)
            os.kill(os.getpid(), signal.SIGKILL)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run work past the request that started it; :meth:`close` cancels it (recovery finishes or undoes it)."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _count_fleet(self) -> catalog.FleetCounts:
        async with self.server.catalog() as conn:
            return await catalog.fleet(conn, self.migrations.latest_version)

    async def close(self) -> None:
        """Cancel background work (what it left in flight is finished or undone by recovery), then close the
        kept tenant connections and the servers' admin pools."""
        for task in list(self.background):
            task.cancel()
        for task in list(self.background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.levels is not None:
            await self.levels.close()
        await self.connections.close()
        await self.servers.close()
