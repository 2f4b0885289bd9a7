"""Per-tenant locks: an in-process lock, one of a bounded number of slots, and a session advisory lock in the
catalog database (it dies with its connection, so a crash never leaves a tenant locked)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from asyncpg.pool import PoolConnectionProxy

from service.errors import TenantBusy
from service.store.db import (
    LOCK_NAMESPACE,
    UNAVAILABLE,
    Conn,
    PostgresError,
    Server,
    sqlstate,
    unavailable_as_service_error,
)

LOCK_NOT_AVAILABLE: Final = "55P03"


class TenantLocks:
    """Per-tenant mutual exclusion across tasks of this process *and* across replicas.

    An in-process lock queues same-tenant requests so that only one of them holds a catalog connection while it
    waits; a session advisory lock in the catalog database excludes other processes, and dies with the
    connection if the process dies, so a crash never leaves a tenant locked.

    A lease is also one of ``parallel`` slots: at most that many operations run at once against the server (each
    holds a catalog connection and usually a tenant connection), so a burst of requests waits in line instead of
    exhausting the pool or the server's connections. The slot is taken after the in-process lock (a same-tenant
    waiter holds no slot) and before any connection; the wait for a slot is not bounded by ``timeout``, which is
    about the tenant being busy, not the server.
    """

    def __init__(self, server: Server, timeout: float, parallel: int = 4) -> None:
        self._server = server
        self._timeout = timeout
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}
        self._slots = asyncio.Semaphore(parallel)

    async def acquire(self, tenant_id: str) -> Lease:
        """Wait (bounded) for the tenant, then (in line) for a slot; raise :class:`TenantBusy` past the bound."""
        local, left = await self._enter_in_line(tenant_id)
        try:
            pool = self._server.require_pool()
            with unavailable_as_service_error():
                conn: PoolConnectionProxy = await pool.acquire(timeout=left)
            try:
                await _advisory_lock(conn, tenant_id, left)
            except BaseException:
                await pool.release(conn)
                raise
        except BaseException:
            self._exit(tenant_id, local)
            raise
        return Lease(self, tenant_id, conn, local, self._slots)

    async def acquire_on(self, conn: Conn, tenant_id: str) -> Lease:
        """As :meth:`acquire`, with the advisory lock taken on ``conn``, a catalog connection the caller keeps and
        releasing the lease does not give back: a rollout worker's, which saves a pool round trip per tenant."""
        local, left = await self._enter_in_line(tenant_id)
        try:
            with unavailable_as_service_error():
                await _advisory_lock(conn, tenant_id, left)
        except BaseException:
            self._exit(tenant_id, local)
            raise
        return Lease(self, tenant_id, conn, local, self._slots)

    async def try_local(self, tenant_id: str) -> asyncio.Lock | None:
        """The tenant's in-process lock if nobody here holds it, else None; for a caller that takes the advisory
        locks of several tenants itself (:func:`try_advisory_locks`) and releases with :meth:`release_local`."""
        local = self._enter(tenant_id)
        if local.locked():
            self._leave(tenant_id)
            return None
        await local.acquire()
        return local

    def release_local(self, tenant_id: str, local: asyncio.Lock) -> None:
        local.release()
        self._leave(tenant_id)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the ``parallel`` slots, for work that takes tenant locks itself."""
        async with self._slots:
            yield

    async def _enter_in_line(self, tenant_id: str) -> tuple[asyncio.Lock, float]:
        """Take the in-process lock (bounded wait) and then a slot; return the lock and what is left of the bound."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        local = self._enter(tenant_id)
        try:
            async with asyncio.timeout(self._timeout):
                await local.acquire()
        except TimeoutError:
            self._leave(tenant_id)
            raise TenantBusy(tenant=tenant_id) from None
        # What is left of the bound bounds the advisory lock; the wait for a slot is not part of it.
        left = max(self._timeout - (loop.time() - started), 0.001)
        try:
            await self._slots.acquire()
        except BaseException:
            local.release()
            self._leave(tenant_id)
            raise
        return local, left

    def _exit(self, tenant_id: str, local: asyncio.Lock) -> None:
        self._slots.release()
        local.release()
        self._leave(tenant_id)

    async def try_acquire(self, tenant_id: str) -> Lease | None:
        """Take the tenant only if nobody holds it (used by recovery)."""
        local = await self.try_local(tenant_id)
        if local is None:
            return None
        try:
            pool = self._server.require_pool()
            with unavailable_as_service_error():
                conn = await pool.acquire()
                try:
                    taken = await conn.fetchval(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, tenant_id
                    )
                except BaseException:
                    await pool.release(conn)
                    raise
        except BaseException:
            self.release_local(tenant_id, local)
            raise
        if taken:
            return Lease(self, tenant_id, conn, local)
        await pool.release(conn)
        self.release_local(tenant_id, local)
        return None

    def _enter(self, tenant_id: str) -> asyncio.Lock:
        lock, users = self._local.get(tenant_id, (asyncio.Lock(), 0))
        self._local[tenant_id] = (lock, users + 1)
        return lock

    def _leave(self, tenant_id: str) -> None:
        lock, users = self._local[tenant_id]
        if users <= 1:
            del self._local[tenant_id]
        else:
            self._local[tenant_id] = (lock, users - 1)


async def try_tenant_xact_lock(conn: Conn, tenant_id: str) -> bool:
    """The tenant's lock until the caller's transaction ends, if nobody holds it (a short catalog write that must
    not race an operation on the tenant, but need not wait for one)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", LOCK_NAMESPACE, tenant_id))


async def try_advisory_locks(conn: Conn, tenant_ids: Sequence[str]) -> set[str]:
    """Take the advisory locks of those tenants that are free, in one statement; return their ids."""
    rows = await conn.fetch(
        "SELECT id FROM unnest($1::text[]) AS t(id) WHERE pg_try_advisory_lock($2, hashtext(id))",
        list(tenant_ids),
        LOCK_NAMESPACE,
    )
    return {r["id"] for r in rows}


async def advisory_unlock(conn: Conn, tenant_ids: Sequence[str]) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock($2, hashtext(id)) FROM unnest($1::text[]) AS t(id)", list(tenant_ids), LOCK_NAMESPACE
    )


async def _advisory_lock(conn: Conn, tenant_id: str, wait_seconds: float) -> None:
    """The tenant's session advisory lock on ``conn``: one statement when it is free (the usual case), else a wait
    bounded by ``lock_timeout``; raise :class:`TenantBusy` past it."""
    if await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, tenant_id):
        return
    await conn.execute(f"SET lock_timeout = {int(wait_seconds * 1000) + 1}")
    try:
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, tenant_id)
    except PostgresError as exc:
        if sqlstate(exc) == LOCK_NOT_AVAILABLE:
            raise TenantBusy(tenant=tenant_id) from exc
        raise
    finally:
        with contextlib.suppress(*UNAVAILABLE, PostgresError):
            await conn.execute("SET lock_timeout = 0")


@dataclass
class Lease:
    """A held tenant lock and the catalog connection that holds it; release exactly once."""

    locks: TenantLocks
    tenant_id: str
    conn: Conn
    _local: asyncio.Lock
    _slot: asyncio.Semaphore | None = None
    _released: bool = False

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            try:
                with contextlib.suppress(*UNAVAILABLE, PostgresError):
                    await self.conn.execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_NAMESPACE, self.tenant_id
                    )
            finally:
                # Even when cancelled during the unlock (a shutdown): a connection kept from the pool would hang
                # Pool.close(), and the pool's reset unlocks it.
                if isinstance(self.conn, PoolConnectionProxy):  # else the caller's own (acquire_on): it stays open
                    await self.locks._server.require_pool().release(self.conn)
        finally:
            if self._slot is not None:
                self._slot.release()
            self._local.release()
            self.locks._leave(self.tenant_id)
