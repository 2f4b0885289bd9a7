"""Drain a server: it takes no new tenants, and its tenants are moved to the others.

A drain lives in the catalog (``drains``, catalog_0006.sql): while its row exists, placement skips the server. It is
driven like a rollout: whichever process holds its advisory lock (``0x7E4A4``, the server's name hashed) moves the
server's ready tenants ``concurrency`` at a time (each through :func:`service.tenants.move.move`, to the server
placement chooses among the others), counts failures, and stops ``failed`` past ``max_failures``. Every process
looks for running drains at start and every poll interval and drives those whose lock is free, so a drain survives a
restart or the death of its driver; a move it was running is undone or finished by recovery, and the drain goes on.
``undrain`` deletes the row: the server takes tenants again and the driver stops after the moves in flight.

The same poll also purges tenants deleted longer ago than TENANTS_DELETE_RETENTION.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from service.errors import InvalidRequest, ServiceError
from service.store import catalog, lifecycle
from service.store.db import Conn
from service.store.lifecycle import Drain
from service.tenants import delete, placement
from service.tenants.provisioner import Provisioner

log = logging.getLogger(__name__)

_DRAIN_LOCK: Final = 0x7E4A4


async def start(p: Provisioner, server: str, concurrency: int = 2, max_failures: int = 0) -> Drain:
    """Mark the server draining and let a driver move its tenants. Raises UnknownServer, InvalidRequest (no other
    server would be left to take them)."""
    placement.require(p.servers, server)
    async with p.server.catalog() as conn:
        others = set(p.servers.names) - await lifecycle.draining(conn) - {server}
        if not others:
            raise InvalidRequest("no other server would be left to take its tenants", server=server)
        return await lifecycle.start_drain(conn, server, concurrency, max_failures)


async def stop(p: Provisioner, server: str) -> bool:
    """Undrain: the server takes tenants again. False when it was not draining. Raises UnknownServer."""
    placement.require(p.servers, server)
    async with p.server.catalog() as conn:
        return await lifecycle.end_drain(conn, server)


async def get(p: Provisioner, server: str) -> tuple[Drain | None, int]:
    """The server's drain (None if it is not draining) and how many tenants are still on it."""
    placement.require(p.servers, server)
    async with p.server.catalog() as conn:
        found = (await lifecycle.drains(conn)).get(server)
        left = (await catalog.count_by_server(conn)).get(server, 0)
    return found, left


class Drains:
    """Drives the running drains this process can lock, and purges expired deleted tenants, every ``poll``."""

    def __init__(self, provisioner: Provisioner, poll: float) -> None:
        self.p = provisioner
        self.poll = poll

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        watcher = asyncio.create_task(self._watch(), name="drain-watcher")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        while True:
            try:
                await self.tick()
            except ServiceError as exc:
                log.warning("drain watcher: %s", exc.message)
            except Exception:
                log.exception("drain watcher failed")
            await asyncio.sleep(self.poll)

    async def tick(self) -> None:
        """One look: drive every running drain whose lock is free (to its end), purge expired deleted tenants."""
        await delete.purge_expired(self.p)
        async with self.p.server.catalog() as conn:
            running = [d.server for d in (await lifecycle.drains(conn)).values() if d.state == "running"]
        for server in running:
            conn = await self.p.server.connect(self.p.settings.catalog_database)
            try:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _DRAIN_LOCK, server):
                    await self._drive(conn, server)
            finally:
                await conn.close()

    async def _drive(self, conn: Conn, server: str) -> None:
        skipped: set[str] = set()
        while True:
            drain = (await lifecycle.drains(conn)).get(server)
            if drain is None or drain.state != "running":
                return  # undrained, or finished elsewhere
            found = await lifecycle.tenants_on(conn, server, drain.concurrency + len(skipped))
            batch = [t for t in found if t not in skipped][: drain.concurrency]
            if not batch:
                await lifecycle.drain_progress(conn, server, state="succeeded")
                log.info("drain of %s done", server)
                return
            outcomes = await asyncio.gather(*(self._move_one(t) for t in batch))
            failures = [t for t, ok in zip(batch, outcomes, strict=True) if not ok]
            skipped |= set(failures)
            after = await lifecycle.drain_progress(conn, server, moved=len(batch) - len(failures), failed=len(failures))
            if after is not None and after.failed > after.max_failures:
                error = {"code": "too_many_failures", "message": f"{after.failed} moves failed", "tenants": failures}
                await lifecycle.drain_progress(conn, server, state="failed", error=error)
                return

    async def _move_one(self, tenant_id: str) -> bool:
        """Move one tenant to where placement would put a new one (draining servers excluded)."""
        try:
            async with self.p.server.catalog() as conn:
                counts = await catalog.count_by_server(conn)
                excluded = await lifecycle.draining(conn)
            target = placement.choose(self.p.servers, counts, None, excluded)
            await self.p.move(tenant_id, target.name, wait=True)
            return True
        except ServiceError as exc:
            log.warning("drain: moving %s failed: %s", tenant_id, exc.message)
            return False
