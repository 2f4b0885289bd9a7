"""Idle connections to tenant databases, kept for the read paths that would otherwise open one per request.

``GET /tenants/{id}/schema`` reads a few history rows; opening its connection (TCP, startup, authentication, a
backend process) costs about 10 ms, several times the read, and a fleet dashboard at 200 requests a second cannot
pay it. So reads (schema, status filters, drift checks) borrow an idle connection and give it back.

Only reads use it. Migrations, repairs, creation, adoption and credential changes keep opening their own
connections: they set session state (statement and lock timeouts, advisory locks) that must not leak into the next
user, they run rarely enough that the connect is noise next to their work, and a migration's connection must
fail loudly, not be silently replaced halfway through a chain.

The cache holds at most ``limit`` idle connections over all servers and drops the least recently used database's
oldest one beyond that. A connection idle for ``idle_timeout`` seconds is closed (a sweep runs while any is kept),
and each is counted in its server's connection budget (:mod:`service.store.budget`): when the budget is spent, the
server's oldest idle connection is closed to make room (:meth:`TenantConnections.reclaim`).

A connection is held by one user at a time (it leaves the cache while borrowed), one that
raised is closed rather than kept, and one found closed (its backend ended by a restart, ``pg_terminate_backend``
or ``DROP DATABASE … WITH (FORCE)``) is replaced: the read runs once more on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg

from service.store.budget import Budget
from service.store.db import PostgresError, Target, is_unavailable

T = TypeVar("T")
Read = Callable[[asyncpg.Connection], Awaitable[T]]
_CLOSE_TIMEOUT: Final = 2.0


class TenantConnections:
    """A bounded LRU of idle connections, keyed by (server, database)."""

    def __init__(self, limit: int, idle_timeout: float = 60.0) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        # Per key, (connection, when it was given back), oldest first.
        self._idle: OrderedDict[tuple[str, str], list[tuple[asyncpg.Connection, float]]] = OrderedDict()
        self._budgets: dict[str, Budget | None] = {}
        self._count = 0
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return self._count

    async def run(self, target: Target, database: str, read: Read[T]) -> T:
        """``read`` on an idle connection to ``database`` on ``target`` (else a new one), which is then kept.

        ``read`` must leave the session as it found it and be safe to run twice: a kept connection that turns out
        dead is replaced once. Raises what ``read`` raises, and DatabaseUnavailable (naming the server) when a new
        connection cannot be made.
        """
        key = (target.name, database)
        self._budgets.setdefault(target.name, getattr(target, "budget", None))
        kept = self._take(key)
        if kept is not None:
            try:
                result = await read(kept)
            except Exception as exc:
                dead = kept.is_closed() or is_unavailable(exc)
                kept.terminate()
                if not dead:
                    raise
            except BaseException:
                kept.terminate()
                raise
            else:
                await self._give_back(key, kept)
                return result
        conn = await target.connect(database)
        try:
            result = await read(conn)
        except BaseException:
            # Its state is unknown (an error mid-query, a cancellation): never hand it to anyone else.
            conn.terminate()
            raise
        await self._give_back(key, conn)
        return result

    def _take(self, key: tuple[str, str]) -> asyncpg.Connection | None:
        found = self._idle.get(key)
        while found:
            conn, _ = found.pop()  # the most recently used: the least likely to have been ended meanwhile
            self._count -= 1
            if not found:
                del self._idle[key]
            if not conn.is_closed():
                return conn
        return None

    async def _give_back(self, key: tuple[str, str], conn: asyncpg.Connection) -> None:
        if self._closed or self.limit == 0 or conn.is_closed() or conn.is_in_transaction():
            await _close(conn)
            return
        self._idle.setdefault(key, []).append((conn, time.monotonic()))
        self._idle.move_to_end(key)
        self._count += 1
        while self._count > self.limit:
            self._drop_oldest(next(iter(self._idle)))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def _drop_oldest(self, key: tuple[str, str]) -> None:
        found = self._idle[key]
        victim, _ = found.pop(0)
        if not found:
            del self._idle[key]
        self._count -= 1
        # Not close(): this runs in a request's path, and an idle session has nothing to flush.
        victim.terminate()

    async def reclaim(self, budget: Budget) -> bool:
        """Close the least recently used idle connection counted in ``budget``; False when there is none."""
        for key in self._idle:
            if self._budgets.get(key[0]) is budget:
                self._drop_oldest(key)
                return True
        return False

    async def _sweep(self) -> None:
        """Close connections idle past ``idle_timeout``, until none is kept."""
        while self._idle and not self._closed:
            await asyncio.sleep(max(min(self.idle_timeout / 4, 5.0), 0.05))
            stale = time.monotonic() - self.idle_timeout
            for key in list(self._idle):
                while key in self._idle and self._idle[key][0][1] <= stale:
                    self._drop_oldest(key)

    async def forget(self, server: str, database: str) -> None:
        """Close the idle connections to a database about to be dropped or forgotten."""
        for conn, _ in self._idle.pop((server, database), []):
            self._count -= 1
            await _close(conn)

    async def close(self) -> None:
        """Close every idle connection; connections borrowed now are closed when given back."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        idle, self._idle, self._count = self._idle, OrderedDict(), 0
        for conns in idle.values():
            for conn, _ in conns:
                await _close(conn)


async def _close(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=_CLOSE_TIMEOUT)
    except (PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
        conn.terminate()
