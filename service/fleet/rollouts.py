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
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from service.errors import (
    InvalidRequest,
    RolloutFinished,
    RolloutInProgress,
    RolloutNotFound,
    ServiceError,
    TenantNotFound,
)
from service.fleet import rollout_store as store
from service.fleet.rollout_driver import Driver, LockLost
from service.fleet.rollout_store import Rollout
from service.identifiers import validate_tenant_id
from service.store import audit
from service.store.db import UNIQUE_VIOLATION, as_unavailable, sqlstate
from service.tenants.provisioner import Provisioner

log = logging.getLogger(__name__)

# First key of a rollout's advisory lock (the second is its id): apart from db.LOCK_NAMESPACE, whose second keys are
# hashes of tenant ids and names, so a rollout's lock can never collide with a tenant's.
_LOCK_NAMESPACE: Final = 0x7E4A2
# Bounds in seconds of the migration-duration histogram in /metrics.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class RolloutRequest:
    to_version: int | None = None
    concurrency: int = 8
    canary: int = 5
    max_failures: int = 1
    tenants: tuple[str, ...] | None = None


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
                running = await store.running_ids(conn, kind="migrate")
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
            driver = Driver(self, rollout_id, lock)
            if await driver.run() and driver.kind == "migrate":
                self._spawn(self._recheck_drift(rollout_id), f"rollout-{rollout_id}-drift")
        except LockLost:
            log.warning("rollout %d: lost its lock connection; another process will take it over", rollout_id)
        except Exception as exc:  # the next look (or another replica) resumes it
            if as_unavailable(exc) is None:
                log.exception("rollout %d: driving stopped: %s", rollout_id, exc)
            else:  # an outage: expected, and no bug to trace
                log.warning("rollout %d: driving stopped by an outage: %s", rollout_id, exc)
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


def _in_order(found: list[tuple[str, int | None]], named: list[str] | None) -> list[tuple[str, int | None]]:
    """The tenants in the order they were named (so an operator picks the canaries), else in id order."""
    if named is None:
        return found
    position = {tenant_id: i for i, tenant_id in enumerate(named)}
    return sorted(found, key=lambda t: position[t[0]])
