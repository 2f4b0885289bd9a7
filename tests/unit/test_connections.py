"""The idle tenant-connection cache, with stand-in connections: reuse, the bound, errors, dead connections."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import pytest

from service.store.connections import TenantConnections

_ids = itertools.count(1)


class FakeConn:
    def __init__(self, database: str) -> None:
        self.id = next(_ids)
        self.database = database
        self.closed = False
        self.in_transaction = False

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    def terminate(self) -> None:
        self.closed = True

    async def close(self, **_: Any) -> None:
        self.closed = True


class FakeTarget:
    def __init__(self, name: str) -> None:
        self.name = name
        self.opened: list[FakeConn] = []

    async def connect(self, database: str, **_: Any) -> FakeConn:
        conn = FakeConn(database)
        self.opened.append(conn)
        return conn


async def ident(conn: Any) -> int:
    return int(conn.id)


async def test_a_connection_is_reused_and_never_shared() -> None:
    cache, target = TenantConnections(10), FakeTarget("a")
    first = await cache.run(target, "db", ident)  # type: ignore[arg-type]
    assert await cache.run(target, "db", ident) == first  # type: ignore[arg-type]
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(conn: Any) -> int:
        started.set()
        await release.wait()
        return int(conn.id)

    holder = asyncio.create_task(cache.run(target, "db", hold))  # type: ignore[arg-type]
    await started.wait()
    other = await cache.run(target, "db", ident)  # type: ignore[arg-type]
    release.set()
    assert await holder == first
    assert other != first  # borrowed meanwhile: a second connection, not the same one
    assert len(cache) == 2


async def test_the_least_recently_used_database_goes_first() -> None:
    cache, target = TenantConnections(2), FakeTarget("a")
    for database in ("one", "two", "one", "three"):
        await cache.run(target, database, ident)  # type: ignore[arg-type]
    assert len(cache) == 2
    assert [c.closed for c in target.opened] == [False, True, False]  # "two" was the least recently used
    await cache.close()
    assert all(c.closed for c in target.opened)
    await cache.run(target, "one", ident)  # type: ignore[arg-type]
    assert len(cache) == 0  # after close nothing is kept


async def test_an_error_drops_the_connection() -> None:
    cache, target = TenantConnections(10), FakeTarget("a")
    await cache.run(target, "db", ident)  # type: ignore[arg-type]

    async def fail(conn: Any) -> None:
        raise asyncpg.UndefinedTableError("no such table")

    with pytest.raises(asyncpg.UndefinedTableError):
        await cache.run(target, "db", fail)  # type: ignore[arg-type]
    assert len(target.opened) == 1  # not retried: the connection was fine, the read was not
    assert target.opened[0].closed
    assert len(cache) == 0


async def test_a_dead_kept_connection_is_replaced_once() -> None:
    cache, target = TenantConnections(10), FakeTarget("a")
    await cache.run(target, "db", ident)  # type: ignore[arg-type]
    calls = []

    async def read(conn: Any) -> int:
        calls.append(conn.id)
        if len(calls) == 1:
            conn.closed = True  # the server ended it while it sat in the cache
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return int(conn.id)

    assert await cache.run(target, "db", read) == target.opened[1].id  # type: ignore[arg-type]
    assert calls == [target.opened[0].id, target.opened[1].id]
    target.opened[1].closed = True  # found closed before use: skipped without running the read on it
    assert await cache.run(target, "db", ident) == target.opened[2].id  # type: ignore[arg-type]


async def test_forget_closes_a_database_idle_connections_only() -> None:
    cache, target, other = TenantConnections(10), FakeTarget("a"), FakeTarget("b")
    await cache.run(target, "db", ident)  # type: ignore[arg-type]
    await cache.run(other, "db", ident)  # type: ignore[arg-type]
    await cache.forget("a", "db")
    assert (target.opened[0].closed, other.opened[0].closed) == (True, False)
    assert len(cache) == 1


async def test_a_connection_left_in_a_transaction_is_not_kept() -> None:
    cache, target = TenantConnections(10), FakeTarget("a")

    async def leave_open(conn: Any) -> None:
        conn.in_transaction = True

    await cache.run(target, "db", leave_open)  # type: ignore[arg-type]
    assert len(cache) == 0
    assert target.opened[0].closed
