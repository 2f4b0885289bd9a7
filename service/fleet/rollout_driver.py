"""Driving one rollout while its lock is held: canaries one at a time, then workers over chunks of tenants,
recording each tenant's outcome in the catalog, then the rollout's end state."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from service.errors import (
    ServiceError,
    TenantNotFound,
)
from service.fleet import move_store, moves
from service.fleet import rollout_store as store
from service.fleet.rollout_store import ItemState
from service.store import audit, catalog
from service.store.catalog import Tenant
from service.store.locks import advisory_unlock, try_advisory_locks
from service.tenants.steps import error_dict, require_ready

if TYPE_CHECKING:
    from service.fleet.rollouts import Rollouts

log = logging.getLogger("service.fleet.rollouts")

# A driver that cannot reach its lock connection within this many seconds stops driving: it may have lost the lock.
_PING_TIMEOUT: Final = 10.0
# Seconds between two checks that the lock connection still answers (made before starting a tenant).
_PING_INTERVAL: Final = 1.0
# Tenants a worker locks, reads and unlocks at once, saving catalog statements per tenant (bench/RESULTS.md).
_CHUNK: Final = 8


class LockLost(Exception):
    """This process no longer holds the rollout's lock: stop driving, leave the rollout to whoever takes it."""


class Driver:
    """Drives one rollout while its lock is held: canaries, then the rest, then the end state (the drift sweep
    that follows is :meth:`Rollouts._recheck_drift`).

    Each worker keeps a catalog connection with asynchronous commits; per tenant the catalog sees about one
    statement and a half (see :meth:`_run_chunk`). Nothing is lost that matters if the catalog's server crashes
    before those commits are flushed: the tenant's own history (committed durably with its migration) is the truth,
    and a resumed rollout reads it again.
    """

    def __init__(self, rollouts: Rollouts, rollout_id: int, lock: asyncpg.Connection) -> None:
        self._rollouts = rollouts
        self._provisioner = rollouts.provisioner
        self._server = rollouts.provisioner.server
        self._id = rollout_id
        self._lock = lock
        self._target = 0
        self.kind: store.Kind = "migrate"
        self._rollout: store.Rollout | None = None
        self._planned: dict[str, str] = {}
        self._max_failures = 0
        self._failed = 0
        self._canary_failed = False
        self._lost = False
        self._pinged = 0.0
        # One connection answers one query at a time; the workers take turns to ping it.
        self._ping = asyncio.Lock()

    async def run(self) -> bool:
        """Drive the rollout to its end (True), or return False when it is not this process's to drive.

        Raises _LockLost (the rollout is left running for the next driver)."""
        async with self._server.catalog() as conn:
            rollout = await store.get(conn, self._id, with_tenants=False)
            if rollout is None or rollout.state != "running":
                return False  # ended by the driver that held the lock before us
            if rollout.kind == "migrate" and rollout.to_version not in self._provisioner.migrations.by_version:
                # A replica from before the target's file was added (a rolling deploy): leave it to one that has it.
                log.warning("rollout %d: version %d is not loaded here; not driving it", self._id, rollout.to_version)
                return False
            resumed = await store.requeue_interrupted(conn, self._id)
            progress = await store.progress(conn, self._id)
            self._planned = await move_store.planned(conn, self._id) if rollout.kind == "rebalance" else {}
        if resumed:
            log.warning("rollout %d: running again %d tenant(s) its previous driver left running", self._id, resumed)
        self._rollout, self.kind, self._target = rollout, rollout.kind, rollout.to_version or 0
        self._max_failures = rollout.max_failures
        self._failed, self._canary_failed = progress.failed, progress.canary_failed > 0
        workers = min(rollout.concurrency, self._rollouts.parallel)
        if await self._canaries():
            await self._rest(workers)
        while rollout.server is not None and await self._may_start(canary=False) and await self._arrivals():
            await self._rest(workers)  # a drain: tenants placed on its server as it started, or moved back
        if self._lost:
            raise LockLost
        await self._finish()
        return True

    async def _canaries(self) -> bool:
        """One at a time; False when the rollout must stop (a canary failed, it was cancelled, the lock is lost)."""
        async with self._worker_connection() as conn:
            for tenant_id in await store.pending(conn, self._id, canary=True):
                if not await self._may_start(canary=True) or not await self._migrate(conn, tenant_id, canary=True):
                    return False
        return await self._may_start(canary=False)

    async def _rest(self, workers: int) -> None:
        # The workers share one iterator: each takes the next tenant when it is free.
        async with self._server.catalog() as conn:
            queue = iter(await store.pending(conn, self._id, canary=False))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(self._work(queue))

    async def _arrivals(self) -> int:
        assert self._rollout is not None
        assert self._rollout.server is not None
        async with self._server.catalog() as conn:
            return await move_store.add_arrivals(conn, self._id, self._rollout.server)

    async def _work(self, queue: Iterator[str]) -> None:
        async with self._worker_connection() as conn:
            while self.kind != "migrate" and await self._may_start(canary=False):  # moves: one tenant at a time
                tenant_id = next(queue, None)
                if tenant_id is None or not await self._migrate(conn, tenant_id, canary=False):
                    return
            while await self._may_start(canary=False):
                chunk = list(itertools.islice(queue, _CHUNK))
                if not chunk or not await self._run_chunk(conn, chunk):
                    return

    @contextlib.asynccontextmanager
    async def _worker_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A catalog connection of the worker's own, with asynchronous commits (see the class docstring)."""
        conn = await self._server.connect(self._server.catalog_database, server_settings={"synchronous_commit": "off"})
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _may_start(self, *, canary: bool) -> bool:
        """Whether to start one more tenant; never once the lock connection failed to answer (it may be lost).

        The driver alone changes its rollout's tenants, so the failures are counted here; a cancel is read when
        tenants are claimed (``store.claim``)."""
        if self._lost or self._canary_failed:
            return False
        loop = asyncio.get_running_loop()
        if loop.time() - self._pinged > _PING_INTERVAL:
            try:
                async with self._ping:
                    await self._lock.fetchval("SELECT 1", timeout=_PING_TIMEOUT)
                self._pinged = loop.time()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                self._lost = True
                return False
        return canary or self._failed <= self._max_failures

    async def _run_chunk(self, conn: asyncpg.Connection, chunk: list[str]) -> bool:
        """Migrate a few tenants with fewer catalog statements; False when the rollout must stop.

        The tenants of the chunk that are free are locked in one statement and read in another. Each is still
        claimed (reading a cancel) and recorded on its own, so that a cancel or ``max_failures`` is obeyed between
        tenants and the counts move one tenant at a time, but a tenant's record also claims the next one, and the
        last record releases the chunk's locks. A tenant held elsewhere runs after the chunk, waiting for its lock
        like any operation."""
        locks = self._provisioner.locks
        ready: list[str] = []
        stopped = False
        async with locks.slot():
            local = {t: lock for t in chunk if (lock := await locks.try_local(t)) is not None}
            held: set[str] = set()
            try:
                held = await try_advisory_locks(conn, list(local)) if local else set()
                found = await catalog.get_many(conn, list(held)) if held else {}
                ready = [t for t in chunk if t in held]
                if ready:
                    stopped = not (await self._may_start(canary=False) and await store.claim(conn, self._id, ready[:1]))
                for i, tenant_id in enumerate(ready):
                    if stopped:
                        break
                    outcome = await self._upgrade(tenant_id, found.get(tenant_id))
                    self._count(tenant_id, outcome.state, outcome.error, canary=False)
                    after = ready[i + 1] if i + 1 < len(ready) else None
                    if after is not None and not await self._may_start(canary=False):
                        after, stopped = None, True
                    unlock = sorted(held) if after is None else []
                    claimed = await store.record(
                        conn, self._id, audit.actor.get(), [outcome], claim_next=after, unlock=unlock
                    )
                    if after is None:
                        held = set()  # the record released them
                    elif not claimed:
                        stopped = True  # cancelled
            finally:
                if held:
                    await advisory_unlock(conn, sorted(held))
                for tenant_id, lock in local.items():
                    locks.release_local(tenant_id, lock)
        if stopped:
            return False
        for tenant_id in chunk:
            if tenant_id in ready:
                continue
            if not await self._may_start(canary=False) or not await self._migrate(conn, tenant_id, canary=False):
                return False
        return True

    async def _upgrade(self, tenant_id: str, tenant: Tenant | None) -> store.Outcome:
        """One tenant of a chunk, its lock held; its outcome for the chunk's record."""
        started, began = time.perf_counter(), datetime.now(UTC)
        try:
            upgrade = await self._provisioner.upgrade_locked(require_ready(tenant_id, tenant), self._target)
        except Exception as exc:
            failed, why = _failure(self._id, tenant_id, exc)
            return store.Outcome(tenant_id, failed, _ms_since(started), why)
        state: ItemState = "succeeded"
        error = upgrade.error
        if error is not None:
            state = "failed"
        elif upgrade.version is None or upgrade.version < self._target:
            state, error = "failed", {"code": "target_not_reached", "message": _short_of(upgrade.version, self._target)}
        return store.Outcome(
            tenant_id,
            state,
            _ms_since(started),
            error,
            touched=True,
            version=upgrade.version,
            ran=upgrade.ran,
            from_version=upgrade.from_version,
            migration_error=upgrade.error,
            started_at=began,
        )

    async def _migrate(self, conn: asyncpg.Connection, tenant_id: str, *, canary: bool) -> bool:
        """Run one tenant on its own (a canary, or a tenant that was busy when its chunk ran) and record its
        outcome; False when the rollout was cancelled before it started."""
        if not await store.claim(conn, self._id, [tenant_id]):
            return False
        started = time.perf_counter()
        state: ItemState = "succeeded"
        error, to_server = None, None
        try:
            if self._rollout is not None and self.kind != "migrate":  # a drain or a rebalance: one move
                planned = self._planned.get(tenant_id)
                to_server = await moves.move_one(self._provisioner, self._rollout, tenant_id, planned)
            else:
                reached = await self._migrate_one(conn, tenant_id, canary=canary)
                if reached is None or reached < self._target:
                    state, error = "failed", {"code": "target_not_reached", "message": _short_of(reached, self._target)}
        except Exception as exc:
            state, error = _failure(self._id, tenant_id, exc)
        outcome = store.Outcome(tenant_id, state, _ms_since(started), error, to_server=to_server)
        await store.record(conn, self._id, audit.actor.get(), [outcome])
        self._count(tenant_id, state, error, canary=canary)
        return True

    async def _migrate_one(self, conn: asyncpg.Connection, tenant_id: str, *, canary: bool) -> int | None:
        if canary:  # one at a time, and checked for drift at once: a canary is there to be looked at
            return (await self._provisioner.migrate(tenant_id, to_version=self._target)).current_version
        return await self._provisioner.migrate_on(conn, tenant_id, self._target)

    def _count(self, tenant_id: str, state: ItemState, error: dict[str, Any] | None, *, canary: bool) -> None:
        if state == "failed":
            self._failed += 1
            self._canary_failed = self._canary_failed or canary
            log.warning("rollout %d: %s failed: %s", self._id, tenant_id, error)

    async def _finish(self) -> None:
        """End state: cancelled if tenants were left when it was cancelled, else failed if any tenant failed."""
        async with self._server.catalog() as conn, conn.transaction():
            progress = await store.progress(conn, self._id)
            if progress.cancel_requested and progress.pending:
                state: store.RolloutState = "cancelled"
            else:
                state = "failed" if progress.failed else "succeeded"
            await store.finish(conn, self._id, state)
        log.info("rollout %d %s", self._id, state)


def _failure(rollout_id: int, tenant_id: str, exc: Exception) -> tuple[ItemState, dict[str, Any]]:
    """A tenant's state and error after its migration raised: skipped if it was deleted meanwhile."""
    if isinstance(exc, TenantNotFound):  # deleted since the rollout started: nothing left to migrate
        return "skipped", error_dict(exc)
    if isinstance(exc, ServiceError):
        return "failed", error_dict(exc)
    log.error("rollout %d: migrating %s failed", rollout_id, tenant_id, exc_info=exc)
    return "failed", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _short_of(reached: int | None, target: int) -> str:
    return f"the tenant is at version {reached}, below the rollout's target {target}"
