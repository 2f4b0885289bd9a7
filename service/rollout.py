"""Fleet rollouts: bring every tenant below a target version up to it, canaries first, stopping on failures.

A rollout's tenants are the ready ones below the target when it starts (among those named, if any), in id order
or the order given; the first ``canary`` of them are its canaries.

- **Canaries run one at a time**, and any canary failure stops the rollout: the point of a canary is to break as
  few tenants as possible before a bad file is noticed. The others then run ``concurrency`` at a time (at most
  ``TENANTS_MAX_PARALLEL`` per process, the cap every operation that changes tenants shares); the rollout stops
  starting tenants once more than ``max_failures`` of them failed, or once it is cancelled, and lets those running
  finish.
- **It survives its process.** The rollout and each tenant's state live in the catalog; a tenant is marked
  ``running`` before it is touched. The process that drives a rollout holds a session advisory lock on it, on a
  connection of its own, for as long as it drives. Every process (replicas sharing the catalog included) looks for
  running rollouts at start and every ``TENANTS_ROLLOUT_POLL_INTERVAL`` seconds and drives any whose lock is free:
  their driver died. Tenants it left ``running`` are run again, which is safe: a migration is idempotent (only
  pending files run) and commits per batch, so the attempt that died either committed a batch or left nothing.
- **Tenants never run twice at once**: each migration takes the tenant's own lock, as a single migrate does.
- **One rollout runs at a time** (a unique index in the catalog): two rollouts to different targets would race for
  the same tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from service import audit, catalog
from service import rollout_catalog as store
from service.catalog import Tenant
from service.db import UNIQUE_VIOLATION, advisory_unlock, sqlstate, try_advisory_locks
from service.errors import (
    InvalidRequest,
    RolloutFinished,
    RolloutInProgress,
    RolloutNotFound,
    ServiceError,
    TenantNotFound,
)
from service.identifiers import validate_tenant_id
from service.provisioner import Provisioner, error_dict, require_ready
from service.rollout_catalog import ItemState, Rollout

log = logging.getLogger(__name__)

# First key of a rollout's advisory lock (the second is its id): apart from db.LOCK_NAMESPACE, whose second keys are
# hashes of tenant ids and names, so a rollout's lock can never collide with a tenant's.
_LOCK_NAMESPACE: Final = 0x7E4A2
# A driver that cannot reach its lock connection within this many seconds stops driving: it may have lost the lock.
_PING_TIMEOUT: Final = 10.0
# Seconds between two checks that the lock connection still answers (made before starting a tenant).
_PING_INTERVAL: Final = 1.0
# Tenants a worker locks, reads and unlocks at once, saving catalog statements per tenant (bench/RESULTS.md).
_CHUNK: Final = 8
# Bounds in seconds of the migration-duration histogram in /metrics.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class RolloutRequest:
    to_version: int | None = None
    concurrency: int = 8
    canary: int = 5
    max_failures: int = 1
    tenants: tuple[str, ...] | None = None


class _LockLost(Exception):
    """This process no longer holds the rollout's lock: stop driving, leave the rollout to whoever takes it."""


class Rollouts:
    """Starts, reads and cancels rollouts, and drives those whose lock this process can take."""

    def __init__(self, provisioner: Provisioner, poll_interval: float) -> None:
        self.provisioner = provisioner
        self._server = provisioner.server
        self._interval = poll_interval
        # Tenants one rollout migrates at once in this process: the cap every tenant-changing operation shares.
        self.parallel = provisioner.settings.max_parallel
        self._driving: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- requests -------------------------------------------------------------------------------------------

    async def start(self, request: RolloutRequest) -> Rollout:
        """Record a rollout and start driving it in the background; a rollout with no tenant is born succeeded.

        Raises InvalidRequest (no such target version, a tenant named twice), TenantNotFound (a named tenant does
        not exist), RolloutInProgress (another rollout is running).
        """
        target = self._target(request.to_version)
        only = self._named(request.tenants)
        try:
            async with self._server.catalog() as conn, conn.transaction():
                if only is not None and (missing := await store.unknown_tenants(conn, only)):
                    raise TenantNotFound(f"no tenant has the id {missing[0]!r}", tenants=missing)
                tenants = _in_order(await store.candidates(conn, target, only), only)
                rollout_id = await store.insert(
                    conn,
                    to_version=target,
                    concurrency=request.concurrency,
                    canary=min(request.canary, len(tenants)),
                    max_failures=request.max_failures,
                    actor=audit.actor.get(),
                    tenants=tenants,
                )
        except asyncpg.PostgresError as exc:
            if sqlstate(exc) != UNIQUE_VIOLATION:
                raise
            async with self._server.catalog() as conn:
                running = await store.running_ids(conn)
            raise RolloutInProgress(rollout=running[0] if running else None) from exc
        self.kick(rollout_id)
        return await self.get(rollout_id)

    def _target(self, to_version: int | None) -> int:
        latest = self.provisioner.migrations.latest_version
        if latest is None:
            raise InvalidRequest("there are no migrations to roll out")
        if to_version is None:
            return latest
        if to_version not in self.provisioner.migrations.by_version:
            raise InvalidRequest(
                f"to_version {to_version} is not a loaded migration version (latest is {latest})", field="to_version"
            )
        return to_version

    @staticmethod
    def _named(tenants: Sequence[str] | None) -> list[str] | None:
        if tenants is None:
            return None
        for tenant_id in tenants:
            validate_tenant_id(tenant_id)
        if len(set(tenants)) != len(tenants):
            raise InvalidRequest("a tenant is named twice in tenants", field="tenants")
        return list(tenants)

    async def get(self, rollout_id: int) -> Rollout:
        async with self._server.catalog() as conn:
            found = await store.get(conn, rollout_id)
        if found is None:
            raise RolloutNotFound(rollout=rollout_id)
        return found

    async def page(self, *, before: int | None, limit: int) -> list[Rollout]:
        async with self._server.catalog() as conn:
            return await store.page(conn, before=before, limit=limit)

    async def cancel(self, rollout_id: int) -> Rollout:
        """Stop starting tenants (those running finish); a cancelled rollout's cancel is a no-op.

        When no process drives the rollout it is ended here and answered ``cancelled``; otherwise its driver ends
        it after its running tenants, and the answer is still ``running``. Raises RolloutNotFound, RolloutFinished.
        """
        async with self._server.catalog() as conn:
            asked = await store.request_cancel(conn, rollout_id)
        if not asked:
            current = await self.get(rollout_id)
            if current.state == "cancelled":
                return current
            raise RolloutFinished(rollout=rollout_id, state=current.state)
        task = self._driving.get(rollout_id)
        if task is None:
            task = self.kick(rollout_id)
            # Nobody drove it: taking the lock ends it at once (nothing is started after a cancel).
            await asyncio.shield(task)
        return await self.get(rollout_id)

    async def duration_buckets(self) -> tuple[list[int], int, float]:
        async with self._server.catalog() as conn:
            return await store.duration_buckets(conn, DURATION_BUCKETS)

    # -- driving --------------------------------------------------------------------------------------------

    def kick(self, rollout_id: int) -> asyncio.Task[None]:
        """Drive the rollout in the background if its lock is free; the task returns at once if it is not."""
        task = self._driving.get(rollout_id)
        if task is None:
            task = asyncio.create_task(self._drive_if_free(rollout_id), name=f"rollout-{rollout_id}")
            self._driving[rollout_id] = task
            task.add_done_callback(lambda _: self._driving.pop(rollout_id, None))
        return task

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run follow-up work in the background, cancelled with the app (see :meth:`running`)."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drive_if_free(self, rollout_id: int) -> None:
        try:
            lock = await self._server.connect(self._server.catalog_database)
        except ServiceError as exc:
            log.warning("rollout %d: cannot open its lock connection: %s", rollout_id, exc.message)
            return
        try:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_NAMESPACE, rollout_id):
                return  # another process drives it
            audit.actor.set(f"rollout:{rollout_id}")
            if await _Driver(self, rollout_id, lock).run():
                self._spawn(self._recheck_drift(rollout_id), f"rollout-{rollout_id}-drift")
        except _LockLost:
            log.warning("rollout %d: lost its lock connection; another process will take it over", rollout_id)
        except Exception as exc:  # the next look (or another replica) resumes it
            log.exception("rollout %d: driving stopped: %s", rollout_id, exc)
        finally:
            with contextlib.suppress(Exception):
                await lock.close()  # also releases the advisory lock

    async def _recheck_drift(self, rollout_id: int) -> None:
        """The drift re-check every migration run owes (see the drift issue), made once for a whole rollout after
        it ended, so that its migrations are not held up by it (canaries were checked as they ran). A tenant that
        cannot be checked now (busy, its server down) is left to the next sweep (``TENANTS_DRIFT_INTERVAL`` or
        ``POST /drift-checks``); so is the rest if this process stops meanwhile."""
        async with self._server.catalog() as conn:
            tenants = await store.migrated(conn, rollout_id)
        gate = asyncio.Semaphore(self.parallel)
        drifted: list[str] = []

        async def one(tenant_id: str) -> None:
            async with gate:
                try:
                    if not (await self.provisioner.drift.check(tenant_id)).clean:
                        drifted.append(tenant_id)
                except ServiceError as exc:
                    log.warning("rollout %d: drift re-check of %s: %s", rollout_id, tenant_id, exc.message)

        await asyncio.gather(*(one(t) for t in tenants))
        log.info("rollout %d: drift re-checked %d tenant(s), %d drifted", rollout_id, len(tenants), len(drifted))

    async def _look(self) -> None:
        async with self._server.catalog() as conn:
            ids = await store.running_ids(conn)
        for rollout_id in ids:
            self.kick(rollout_id)

    async def _watch(self) -> None:
        """Resume running rollouts at start, then look again every interval (their driver may die any time)."""
        while True:
            try:
                await self._look()
            except ServiceError as exc:
                log.warning("looking for running rollouts failed: %s", exc.message)
            except Exception:
                log.exception("looking for running rollouts failed")
            await asyncio.sleep(self._interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the app's lifetime: resume and watch rollouts; on exit stop driving.

        Stopping cancels the tenants being migrated (their transactions roll back); they stay ``running`` in the
        catalog and are run again by whoever drives the rollout next.
        """
        watcher = asyncio.create_task(self._watch(), name="rollout-watcher")
        try:
            yield
        finally:
            tasks = [watcher, *self._driving.values(), *self._background]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class _Driver:
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
            if rollout.to_version not in self._provisioner.migrations.by_version:
                # A replica from before the target's file was added (a rolling deploy): leave it to one that has it.
                log.warning("rollout %d: version %d is not loaded here; not driving it", self._id, rollout.to_version)
                return False
            resumed = await store.requeue_interrupted(conn, self._id)
            progress = await store.progress(conn, self._id)
        if resumed:
            log.warning("rollout %d: running again %d tenant(s) its previous driver left running", self._id, resumed)
        self._target, self._max_failures = rollout.to_version, rollout.max_failures
        self._failed, self._canary_failed = progress.failed, progress.canary_failed > 0
        if await self._canaries():
            await self._rest(min(rollout.concurrency, self._rollouts.parallel))
        if self._lost:
            raise _LockLost
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

    async def _work(self, queue: Iterator[str]) -> None:
        async with self._worker_connection() as conn:
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
        error = None
        try:
            if canary:  # one at a time, and checked for drift at once: a canary is there to be looked at
                reached = (await self._provisioner.migrate(tenant_id, to_version=self._target)).current_version
            else:
                reached = await self._provisioner.migrate_on(conn, tenant_id, self._target)
            if reached is None or reached < self._target:
                state, error = "failed", {"code": "target_not_reached", "message": _short_of(reached, self._target)}
        except Exception as exc:
            state, error = _failure(self._id, tenant_id, exc)
        outcome = store.Outcome(tenant_id, state, _ms_since(started), error)
        await store.record(conn, self._id, audit.actor.get(), [outcome])
        self._count(tenant_id, state, error, canary=canary)
        return True

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


def _in_order(found: list[tuple[str, int | None]], named: list[str] | None) -> list[tuple[str, int | None]]:
    """The tenants in the order they were named (so an operator picks the canaries), else in id order."""
    if named is None:
        return found
    position = {tenant_id: i for i, tenant_id in enumerate(named)}
    return sorted(found, key=lambda t: position[t[0]])
