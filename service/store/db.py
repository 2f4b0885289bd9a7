"""Connections: the catalog's server and pool, the servers tenants live on, error translation (locks: ``locks``).

The only module that imports ``asyncpg.exceptions``: driver errors are classified by SQLSTATE here and re-raised
as :mod:`service.errors` with ``from exc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg import exceptions as pgexc
from asyncpg.pool import PoolConnectionProxy

from service.config import DEFAULT_SERVER, ServerSpec
from service.errors import DatabaseUnavailable
from service.identifiers import quote_ident
from service.store.budget import Budget, Budgets

# First key of every advisory lock this service takes, so they never collide with an application's own locks.
LOCK_NAMESPACE: Final = 0x7E4A1
DUPLICATE_DATABASE: Final = "42P04"
# Two CREATE DATABASE of one name at the same moment: the loser trips pg_database's unique index instead of 42P04.
UNIQUE_VIOLATION: Final = "23505"
INVALID_CATALOG_NAME: Final = "3D000"
OBJECT_IN_USE: Final = "55006"
# Seconds a tenant server has to accept a connection: one that is down must fail its own tenants' requests soon,
# not hold them (and their locks and slots) for asyncpg's default minute.
CONNECT_TIMEOUT: Final = 10.0
# GET /servers: a health check must answer fast even when a server does not.
HEALTH_TIMEOUT: Final = 2.0
# Seconds between two probes of a server last seen down (placement and the queue ask before using it).
PROBE_INTERVAL: Final = 1.0

_UNAVAILABLE: tuple[type[Exception], ...] = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)
_UNAVAILABLE += (pgexc.CannotConnectNowError, pgexc.ConnectionDoesNotExistError, pgexc.TooManyConnectionsError)
_UNAVAILABLE += (pgexc.AdminShutdownError, pgexc.CrashShutdownError, pgexc.ConnectionFailureError)
# A pool connection whose server went away is detached from its proxy (InterfaceError "connection has been released
# back to the pool"); one cut mid-protocol can be left in a state asyncpg refuses ("cannot switch to state 12").
_UNAVAILABLE += (pgexc.InternalClientError,)
UNAVAILABLE: Final = _UNAVAILABLE

PostgresError = asyncpg.PostgresError
# A plain connection or one borrowed from the pool: the domain code takes either.
Conn = asyncpg.Connection | PoolConnectionProxy


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None


def is_unavailable(exc: BaseException) -> bool:
    """A driver error meaning the server could not be reached or the connection was lost (outage, restart, cut)."""
    return isinstance(exc, _UNAVAILABLE)


def as_unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """``exc`` as the 503 it stands for when it is a lost server or connection, else None (raise it ``from exc``)."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        return DatabaseUnavailable(f"database server unreachable: {type(exc).__name__}: {exc}")
    return None


def is_lost(conn: Conn) -> bool:
    """The connection is closed, or was detached from its pool proxy because the server ended it."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


@contextlib.contextmanager
def unavailable_as_service_error(server: str | None = None) -> Iterator[None]:
    """Translate "cannot reach the server" into :class:`DatabaseUnavailable` (503) for callers, naming the tenant
    server when it is one (its tenants are unavailable, the others are not)."""
    try:
        yield
    except _UNAVAILABLE as exc:
        if server is None:
            raise DatabaseUnavailable(f"database server unreachable: {type(exc).__name__}: {exc}") from exc
        raise DatabaseUnavailable(
            f"database server {server} unreachable: {type(exc).__name__}: {exc}", server=server
        ) from exc


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@dataclass
class Server:
    """One PostgreSQL server: the admin DSN, and a pool on the catalog database."""

    admin_dsn: str
    catalog_database: str
    pool_size: int = 10
    budgets: Budgets = field(default_factory=Budgets)
    pool: asyncpg.Pool | None = field(default=None, init=False)

    @property
    def budget(self) -> Budget:
        return self.budgets.of(self.admin_dsn, DEFAULT_SERVER)

    async def open(self) -> None:
        """Create the catalog database if missing, then open the pool on it. ConnectionBudgetTooSmall: the pool
        does not fit the server's connection budget."""
        with unavailable_as_service_error():
            await self._ensure_catalog_database()
            dsn = with_database(self.admin_dsn, self.catalog_database)
            self.pool = await self.budget.pool(
                dsn, "catalog pool (TENANTS_POOL_SIZE)", min_size=1, max_size=self.pool_size
            )

    async def _ensure_catalog_database(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.catalog_database)
            if not exists:
                # another replica won the race
                with contextlib.suppress(pgexc.DuplicateDatabaseError, pgexc.UniqueViolationError):
                    await conn.execute(f"CREATE DATABASE {quote_ident(self.catalog_database)}")
            # Tenant roles log in to their own database only: never to the catalog (a no-op when not the owner).
            # Replicas starting together would collide on the pg_database row ("tuple concurrently updated").
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_NAMESPACE)
                await conn.execute(f"REVOKE CONNECT ON DATABASE {quote_ident(self.catalog_database)} FROM PUBLIC")
        finally:
            await conn.close()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
            self.budget.unreserve_pool(self.pool_size)

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise DatabaseUnavailable("the catalog pool is not open")
        return self.pool

    @contextlib.asynccontextmanager
    async def catalog(self) -> AsyncIterator[Conn]:
        with unavailable_as_service_error():
            async with self.require_pool().acquire() as conn:
                yield conn

    async def connect(self, database: str, **kwargs: Any) -> asyncpg.Connection:
        with unavailable_as_service_error():
            conn: asyncpg.Connection = await self.budget.connect(with_database(self.admin_dsn, database), **kwargs)
            return conn


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    version: str | None
    error: str | None


class Target:
    """A server tenants live on: its admin URL, its capacity (``None``: no limit), and connections to it.

    Statements about the whole server (databases, roles) go over a small pool on its maintenance database (the one
    its URL names), opened at first use: a server that is down at start delays nothing and costs nothing until one
    of its tenants is touched, and a server that comes back is used again without a restart (the pool replaces
    connections that died). Every failure to reach it is :class:`DatabaseUnavailable` naming it.
    """

    def __init__(
        self, name: str, admin_dsn: str, capacity: int | None, pool_size: int = 4, budget: Budget | None = None
    ):
        self.name, self.admin_dsn, self.capacity = name, admin_dsn, capacity
        self.budget = budget if budget is not None else Budgets().of(admin_dsn, name)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        # When a connection to it last failed (monotonic; None: not seen down) and when it was last probed.
        self._down_at: float | None = None
        self._probed_at = 0.0

    def __repr__(self) -> str:  # never the URL: it holds the admin password
        return f"Target(name={self.name!r}, capacity={self.capacity!r})"

    @property
    def maintenance_database(self) -> str:
        return urlsplit(self.admin_dsn).path.lstrip("/") or "postgres"

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[Conn]:
        """A connection to the maintenance database, for CREATE/DROP DATABASE and CREATE/ALTER/DROP ROLE."""
        with self._reaching():
            pool = await self._admin_pool()
            async with pool.acquire() as conn:
                yield conn
        self._down_at = None

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Translate a lost server into DatabaseUnavailable naming it, and remember that it was seen down."""
        with unavailable_as_service_error(self.name):
            try:
                yield
            except _UNAVAILABLE:
                self._down_at = time.monotonic()
                raise

    @property
    def seen_down(self) -> bool:
        """The last connection to it failed (a lost server, not a refusal of ours); cleared by one that works."""
        return self._down_at is not None

    async def reachable(self) -> bool:
        """Whether to send work here: True unless it was seen down and a probe (at most one per PROBE_INTERVAL)
        still cannot reach it. Costs nothing while the server answers; a probe is one new connection."""
        if self._down_at is None:
            return True
        if time.monotonic() - self._probed_at >= PROBE_INTERVAL:
            self._probed_at = time.monotonic()
            if (await self.health()).healthy:
                self._down_at = None
        return self._down_at is None

    async def _admin_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                # min_size=0: creating the pool connects nowhere; each acquire connects if it must.
                kwargs = {"min_size": 0, "timeout": CONNECT_TIMEOUT, "max_inactive_connection_lifetime": 60}
                self._pool = await self.budget.pool(self.admin_dsn, "admin pool", max_size=self._pool_size, **kwargs)
            return self._pool

    async def connect(self, database: str, **kwargs: Any) -> asyncpg.Connection:
        kwargs.setdefault("timeout", CONNECT_TIMEOUT)
        with self._reaching():
            conn: asyncpg.Connection = await self.budget.connect(with_database(self.admin_dsn, database), **kwargs)
        self._down_at = None
        return conn

    async def database_exists(self, database: str) -> bool:
        async with self.admin() as conn:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))

    async def health(self) -> Health:
        """One short query on a new connection (not the pool: its connections may predate an outage)."""
        try:
            conn = await asyncpg.connect(self.admin_dsn, timeout=HEALTH_TIMEOUT)
            try:
                version = await conn.fetchval("SELECT current_setting('server_version')", timeout=HEALTH_TIMEOUT)
            finally:
                await conn.close(timeout=HEALTH_TIMEOUT)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:  # type: ignore[misc]  # mypy and a starred tuple
            if isinstance(exc, _UNAVAILABLE):
                self._down_at = time.monotonic()
            return Health(False, None, f"{type(exc).__name__}: {exc}")
        self._down_at = None
        return Health(True, str(version), None)

    async def close(self) -> None:
        """Close the admin pool; a later use opens a new one."""
        async with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            self.budget.unreserve_pool(self._pool_size)
            with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError):
                await pool.close()


class Servers:
    """The catalog's :class:`Server` and the :class:`Target` servers tenants live on, in configuration order.

    With no servers configured there is one target, ``default``: the catalog's server, with no capacity limit, so a
    single-server deployment behaves as before servers existed (its tenants' catalog rows say ``default``). Locks
    and the catalog stay on the catalog's server whatever the targets, so they coordinate across all of them.
    """

    def __init__(self, catalog: Server, targets: Sequence[Target]) -> None:
        self.catalog = catalog
        self._targets = {t.name: t for t in targets}

    @classmethod
    def configure(cls, catalog: Server, specs: Sequence[ServerSpec], pool_size: int = 4) -> Servers:
        if not specs:
            return cls(catalog, [Target(DEFAULT_SERVER, catalog.admin_dsn, None, pool_size, catalog.budget)])
        budgets = catalog.budgets
        return cls(catalog, [Target(s.name, s.url, s.capacity, pool_size, budgets.of(s.url, s.name)) for s in specs])

    def __iter__(self) -> Iterator[Target]:
        return iter(self._targets.values())

    def __len__(self) -> int:
        return len(self._targets)

    @property
    def names(self) -> list[str]:
        return list(self._targets)

    @property
    def first(self) -> Target:
        return next(iter(self._targets.values()))

    def get(self, name: str) -> Target | None:
        return self._targets.get(name)

    def target(self, name: str) -> Target:
        """The server of a tenant; DatabaseUnavailable when it is no longer configured (its tenants cannot be
        reached until it is listed again)."""
        found = self._targets.get(name)
        if found is None:
            raise DatabaseUnavailable(f"database server {name} is not configured (TENANTS_SERVERS)", server=name)
        return found

    async def close(self) -> None:
        """Close the targets' admin pools; the catalog's server belongs to whoever opened it."""
        for target in self._targets.values():
            await target.close()
