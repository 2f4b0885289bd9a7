"""Connections are a budget: per PostgreSQL server, this process holds at most ``ceiling`` connections open.

A server refuses connections past ``max_connections``, and the last ``superuser_reserved_connections`` (and, from
PostgreSQL 16, ``reserved_connections``) go to superusers only. A service that opens what it likes (one kept
connection per tenant read, a scratch database per drift check) can fill a server and lock everyone out, its own
new requests included. So every connection this process opens to a server counts against that server's budget:

- the ceiling is ``connection_ceiling`` when set, else ``connection_share`` of the server's usable connections
  (``max_connections`` minus the reserved slots, read from the server on first contact); several replicas each take
  their share; a replica whose queue builders run in a child process (``tenantctl serve``) lends the child
  :func:`builder_ceiling` of its own ceiling, so the two together stay within the share;
- the pools (the catalog's, each server's admin pool) are reserved at their ``max_size`` when they are made;
- every other connection (tenant databases, kept reads, scratch and template databases, rollout and lock
  sessions) takes a permit for as long as it is open. When none is free, the idle kept connections of that server
  are closed first (:meth:`Budget.reclaim`), then the request waits ``wait`` seconds and fails with
  DatabaseUnavailable (503) saying the budget is spent.

A permit goes back when its connection closes, however it closes (asyncpg's termination listener, and a
finalizer for one dropped without closing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg

from service.config import DEFAULT_SERVER, Settings
from service.errors import ConnectionBudgetTooSmall, DatabaseUnavailable

log = logging.getLogger(__name__)

# Connections a server's budget must leave beyond its pools for one operation: a migration holds its tenant
# connection while the expected schema is built beside it (a lock session, an admin session, the scratch database).
MIN_FREE: Final = 4
SETTINGS_QUERY: Final = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
         + coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int AS reserved
"""


@dataclass(frozen=True, slots=True)
class Pressure:
    """What ``/readyz`` reports about one server."""

    server: str
    ceiling: int | None
    max_connections: int | None
    reserved: int  # held by pools
    open: int  # other connections open now
    waiting: int
    refused: int  # requests answered 503 because the budget was spent

    @property
    def spent(self) -> bool:
        return self.ceiling is not None and self.waiting > 0 and self.reserved + self.open >= self.ceiling


class Budget:
    """The connections this process may open to one server."""

    def __init__(
        self, name: str, share: float, ceiling: int, wait: float, want_free: int = MIN_FREE, lent: int = 0
    ) -> None:
        self.name = name
        self._lent = lent  # held by this replica's builder process (builder_ceiling), out of the ceiling
        # Beyond the pools, what every slot busy at once may hold (see Budgets); less only warns.
        self.want_free = max(want_free, MIN_FREE)
        self._share = share
        self._fixed = max(ceiling - lent, 1) if ceiling else None
        self.ceiling: int | None = self._fixed
        self.max_connections: int | None = None
        self._wait = wait
        self._pools = 0
        self._open = 0
        self._waiting = 0
        self._refused = 0
        self._freed = asyncio.Event()
        self._reclaimers: list[Callable[[Budget], Awaitable[bool]]] = []

    def learn(self, max_connections: int, reserved: int) -> None:
        """The server's own limits (``SETTINGS_QUERY``); sets the ceiling unless one is configured."""
        self.max_connections = max_connections
        if self._fixed is None:
            self.ceiling = max(int(self._share * (max_connections - reserved)) - self._lent, 1)

    def reserve_pool(self, size: int, what: str) -> None:
        """Count a pool at its largest; ConnectionBudgetTooSmall when it leaves fewer than MIN_FREE others."""
        if self.ceiling is not None and self._pools + size + MIN_FREE > self.ceiling:
            raise ConnectionBudgetTooSmall(
                f"server {self.name}: a ceiling of {self.ceiling} connections (TENANTS_CONNECTION_CEILING, or "
                f"TENANTS_CONNECTION_SHARE of max_connections={self.max_connections} minus the reserved slots) "
                f"cannot hold the {what} ({size}) beside {self._pools} already reserved and {MIN_FREE} for tenant "
                f"work{self._lent_hint()}: lower TENANTS_POOL_SIZE or TENANTS_MAX_PARALLEL, or raise the share",
                server=self.name,
                ceiling=self.ceiling,
            )
        if self.ceiling is not None and self._pools + size + self.want_free > self.ceiling:
            log.warning(
                "server %s: the %s leaves %d connections of a ceiling of %d for tenant work, below the %d that "
                "TENANTS_MAX_PARALLEL operations and rollout workers may hold at once; they will wait for each other "
                "(and answer 503 after TENANTS_CONNECTION_WAIT): raise TENANTS_CONNECTION_SHARE or lower "
                "TENANTS_MAX_PARALLEL",
                self.name, what, self.ceiling - self._pools - size, self.ceiling, self.want_free,
            )  # fmt: skip
        self._pools += size

    def _lent_hint(self) -> str:
        if not self._lent:
            return ""
        return (
            f", {self._lent} being lent to the queue's builder process (TENANTS_QUEUE_WORKERS; "
            "TENANTS_QUEUE_BUILDER=inline builds in this process instead)"
        )

    def fit(self, wanted: int, *, floor: int, leave: int) -> int:
        """A pool size up to ``wanted`` (not below ``floor``) that leaves ``leave`` for pools still to come and
        ``want_free`` for the rest, once the ceiling is known."""
        if self.ceiling is None:
            return wanted
        return min(wanted, max(floor, self.ceiling - self._pools - leave - self.want_free))

    async def probe(self, dsn: str) -> None:
        """Learn the server's limits now (one connection), if not known yet."""
        if self.ceiling is None:
            await (await self.connect(dsn, timeout=60)).close()

    def on_spent(self, reclaim: Callable[[Budget], Awaitable[bool]]) -> None:
        """``reclaim(budget)`` closes one idle connection counted here and says whether it did."""
        self._reclaimers.append(reclaim)

    def pressure(self) -> Pressure:
        return Pressure(
            self.name, self.ceiling, self.max_connections, self._pools, self._open, self._waiting, self._refused
        )

    async def connect(self, dsn: str, **kwargs: Any) -> asyncpg.Connection:
        """A new connection holding a permit until it closes. Raises DatabaseUnavailable when none came free in
        time, and what asyncpg raises when the server refuses."""
        await self._take()
        try:
            conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
        except BaseException:
            self._give()
            raise
        permit = _Permit(self)
        conn.add_termination_listener(permit.release)
        weakref.finalize(conn, permit.release)
        if self.ceiling is None:
            await self._learn_from(conn)
        return conn

    async def pool(self, dsn: str, what: str, *, max_size: int, **kwargs: Any) -> asyncpg.Pool:
        """An asyncpg pool reserved at ``max_size`` (learning the server's limits first, on a connection of the
        budget's own). Raises ConnectionBudgetTooSmall, and what asyncpg raises."""
        await self.probe(dsn)
        self.reserve_pool(max_size, what)
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(dsn, max_size=max_size, **kwargs)
        except BaseException:
            self._pools -= max_size
            raise
        return pool

    def unreserve_pool(self, size: int) -> None:
        self._pools -= size

    async def _learn_from(self, conn: asyncpg.Connection) -> None:
        with contextlib.suppress(asyncpg.PostgresError):
            row = await conn.fetchrow(SETTINGS_QUERY)
            if row is not None and self.ceiling is None:
                self.learn(row["max_connections"], row["reserved"])

    async def _take(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while self.ceiling is not None and self._pools + self._open >= self.ceiling:
            if await self._reclaim():
                continue
            left = deadline - loop.time()
            if left <= 0:
                self._refused += 1
                raise DatabaseUnavailable(
                    f"connection budget of server {self.name} spent: {self._pools + self._open} of {self.ceiling} "
                    f"connections in use for {self._wait:g} s (TENANTS_CONNECTION_CEILING / _SHARE)",
                    server=self.name,
                    reason="connection_budget",
                )
            self._freed.clear()
            self._waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), min(left, 0.25))
            finally:
                self._waiting -= 1
        self._open += 1

    async def _reclaim(self) -> bool:
        for reclaim in self._reclaimers:
            if await reclaim(self):
                await asyncio.sleep(0)  # the termination listener gives the permit back on the next turn
                return True
        return False

    def _give(self) -> None:
        self._open -= 1
        self._freed.set()


class _Permit:
    def __init__(self, budget: Budget) -> None:
        self._budget: Budget | None = budget

    def release(self, *_: object) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give()


def endpoint(dsn: str) -> str:
    """What identifies a server across URLs that differ in user or database: host and port."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or parts.query}:{parts.port or 5432}"


class Budgets:
    """One :class:`Budget` per server endpoint, shared by the catalog's server and a tenant server at one address."""

    def __init__(
        self, share: float = 1.0, ceiling: int = 0, wait: float = 5.0, *, parallel: int = 0, lent: int = 0
    ) -> None:
        """``parallel``: TENANTS_MAX_PARALLEL. Each running operation and each rollout worker (as many) may hold a
        catalog session of its own and a tenant connection: 2 x parallel beyond the pools, plus one operation's
        MIN_FREE, is what a server's budget should leave. ``lent``: connections of each server's ceiling held by
        this replica's builder process instead (:func:`builder_ceiling`)."""
        self._share, self._ceiling, self._wait, self._lent = share, ceiling, wait, lent
        self._want_free = 2 * parallel + MIN_FREE
        self._by_endpoint: dict[str, Budget] = {}

    def of(self, dsn: str, name: str) -> Budget:
        key = endpoint(dsn)
        found = self._by_endpoint.get(key)
        if found is None:
            found = Budget(name, self._share, self._ceiling, self._wait, self._want_free, self._lent)
            self._by_endpoint[key] = found
        return found

    def all(self) -> list[Budget]:
        return list(self._by_endpoint.values())


def builder_ceiling(workers: int) -> int:
    """Connections per server of a builder process running ``workers`` queue workers: its catalog pool (a lease per
    worker and one to list the queue), its admin pool (one per worker) and MIN_FREE for the tenant connection of
    each build and a template's or expected schema's sessions beside it."""
    return (workers + 1) + workers + max(MIN_FREE, workers)


async def catalog_pool_size(budgets: Budgets, dsn: str, settings: Settings) -> int:
    """``TENANTS_POOL_SIZE`` when set; by default its default shrunk (not below ``max_parallel + 1``) to what the
    server's budget leaves beside the admin pool of a tenant server at the same address: a small server then runs
    with defaults. A server that does not answer keeps the default (opening the catalog reports it)."""
    if "pool_size" in settings.model_fields_set:
        return settings.pool_size
    budget = budgets.of(dsn, DEFAULT_SERVER)
    try:
        await budget.probe(dsn)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return settings.pool_size
    admin_pool = settings.max_parallel + 1
    here = not settings.server_specs or any(endpoint(s.url) == endpoint(dsn) for s in settings.server_specs)
    return budget.fit(settings.pool_size, floor=settings.max_parallel + 1, leave=admin_pool if here else 0)
