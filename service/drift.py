"""Schema drift: a tenant's live catalog against the schema its recorded level says it must have.

The expected schema of version N is not written down anywhere: it is what replaying 0000..N gives. So it is built
that way, once per server tenants live on, in a scratch database on that server (its version, its extensions)
that is always dropped afterwards, and kept by a key that hashes the files, the snapshot format, the server's
name and its version: an edited file simply misses the cache, and two servers never share a snapshot that one of
them would have built differently. Snapshots are kept in this process and in the catalog, so a restart reads them back
instead of replaying. Seed files are not replayed: they write data, and data is not schema.

A scratch database is named ``<catalog>_scratch_<random>`` and is guarded by a session advisory lock on its name
for as long as it exists; one whose lock is free was left by a dead process and is dropped at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from service import catalog, history, runner, snapshot
from service.catalog import DriftCheck, Tenant
from service.config import DEFAULT_SERVER, Settings
from service.connections import TenantConnections
from service.db import LOCK_NAMESPACE, Conn, Server, Servers, Target, TenantLocks
from service.errors import (
    HistoryMismatch,
    MigrationFailed,
    ServiceError,
    TenantNotFound,
    TenantNotReady,
    VersionNotFound,
)
from service.identifiers import quote_ident, validate_tenant_id
from service.migrations import MigrationSet, plan
from service.snapshot import Entry, Key, Snapshot

log = logging.getLogger(__name__)

Change = Literal["missing", "unexpected", "changed"]
# Bump when snapshot.py reads or renders anything differently: every cached expected schema is then rebuilt.
SNAPSHOT_FORMAT: Final = 1
_SCRATCH: Final = "_scratch_"
_KIND_ORDER: Final = {kind: i for i, kind in enumerate(snapshot.KINDS)}
_CHANGE_ORDER: Final = {"missing": 0, "unexpected": 1, "changed": 2}


@dataclass(frozen=True, slots=True)
class Difference:
    object: str
    name: str
    change: Change
    expected: Mapping[str, Any] | None
    actual: Mapping[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "name": self.name,
            "change": self.change,
            "expected": None if self.expected is None else dict(self.expected),
            "actual": None if self.actual is None else dict(self.actual),
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    tenant: str
    version: int | None
    checked_at: datetime
    clean: bool
    differences: tuple[Difference, ...]

    @classmethod
    def of(cls, check: DriftCheck) -> DriftReport:
        return cls(
            tenant=check.tenant_id,
            version=check.version,
            checked_at=check.checked_at,
            clean=check.clean,
            differences=tuple(Difference(**d) for d in check.differences),
        )


@dataclass(frozen=True, slots=True)
class SweepResult:
    checked: int
    drifted: tuple[str, ...]
    # Tenants not checked: busy (another operation held them) or failed ({"tenant", "code", "message"}).
    skipped: tuple[dict[str, str], ...] = field(default=())


def compare(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    """Every difference once, sorted by name, kind and change.

    An object that is missing (or unexpected) because its container is, is not listed again: a dropped table is
    one difference, not one per column, index and constraint; a dropped column takes its indexes with it.
    """
    want, have = expected.entries, actual.entries
    missing = {k for k in want if k not in have}
    unexpected = {k for k in have if k not in want}
    found = [_absent(want[k], "missing") for k in missing if not _explained(want[k], missing)]
    found += [_absent(have[k], "unexpected") for k in unexpected if not _explained(have[k], unexpected)]
    for key in want.keys() & have.keys():
        before, after = want[key].attrs, have[key].attrs
        if before != after:
            fields = sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f))
            found.append(
                Difference(
                    key[0], key[1], "changed", {f: before.get(f) for f in fields}, {f: after.get(f) for f in fields}
                )
            )
    found.sort(key=lambda d: (d.name, _KIND_ORDER.get(d.object, len(_KIND_ORDER)), _CHANGE_ORDER[d.change]))
    return found


def _explained(entry: Entry, absent: set[Key]) -> bool:
    return any(dep in absent for dep in entry.depends)


def _absent(entry: Entry, change: Change) -> Difference:
    attrs = dict(entry.attrs)
    if change == "missing":
        return Difference(entry.kind, entry.name, change, attrs, None)
    return Difference(entry.kind, entry.name, change, None, attrs)


def scratch_prefix(catalog_database: str) -> str:
    """Names of scratch databases start with this; the prefix is cut so a full name fits in 63 bytes."""
    return catalog_database[: 63 - len(_SCRATCH) - 8] + _SCRATCH


class ExpectedSchemas:
    """The expected snapshot of each version of one migration set, built at most once per set of files.

    ``memory`` is shared by every instance of the process by default: its keys are content hashes (files,
    format, server name and version), so two instances can only ever agree on a value. ``target`` is the server
    whose tenants it serves (default: the catalog's server, as ``default``); the catalog stores the snapshots and
    holds the build locks whatever the target.
    """

    _shared: Final[dict[str, Snapshot]] = {}

    def __init__(
        self,
        server: Server,
        migrations: MigrationSet,
        catalog_database: str,
        memory: dict[str, Snapshot] | None = None,
        *,
        target: Target | None = None,
    ) -> None:
        self.server = server
        self.target = target if target is not None else Target(DEFAULT_SERVER, server.admin_dsn, None)
        self.migrations = migrations
        self.catalog_database = catalog_database
        self.memory = self._shared if memory is None else memory
        self.builds = 0  # scratch databases made by this instance (tests and the benchmark read it)
        self._keys: dict[int | None, str] | None = None
        self._building = asyncio.Lock()
        # Versions at and after a file that failed to replay, by key: not retried until the files change (or
        # the process restarts), so a broken file costs one scratch database, not one per request.
        self._failures: dict[str, MigrationFailed] = {}

    @classmethod
    def forget_memory(cls) -> None:
        """Empty the process-wide memory, as a restart would (benchmarks time the catalog path with it)."""
        cls._shared.clear()

    async def get(self, version: int | None) -> Snapshot:
        """The expected snapshot of ``version`` (``None``: a database with nothing applied).

        Raises MigrationFailed when a file fails to replay into an empty database.
        """
        return (await self.some([version]))[version]

    async def every(self) -> dict[int | None, Snapshot]:
        """The expected snapshot of ``None`` (nothing applied) and of every version up to the first that fails to
        replay, if one does."""
        return await self.some([None, *(m.version for m in self.migrations.migrations)], partial=True)

    async def some(self, versions: Iterable[int | None], *, partial: bool = False) -> dict[int | None, Snapshot]:
        """The expected snapshots of ``versions``; without ``partial``, MigrationFailed when one cannot be built."""
        keys = await self._key_map()
        wanted = {v: keys[v] for v in versions}
        found = self._from_memory(wanted)
        if len(found) < len(wanted):
            async with self._building:
                found = self._from_memory(wanted)
                if len(found) < len(wanted):
                    await self._load_stored({v: k for v, k in wanted.items() if v not in found})
                    found = self._from_memory(wanted)
                if len(found) < len(wanted) and not any(k in self._failures for k in wanted.values()):
                    await self._build(keys)
                    found = self._from_memory(wanted)
        failures = [self._failures[k] for v, k in wanted.items() if v not in found and k in self._failures]
        if failures and not partial:
            raise failures[0]
        return found

    def _from_memory(self, wanted: Mapping[int | None, str]) -> dict[int | None, Snapshot]:
        return {v: self.memory[k] for v, k in wanted.items() if k in self.memory}

    async def _key_map(self) -> dict[int | None, str]:
        if self._keys is None:
            conn = await self.target.connect(self.target.maintenance_database)
            try:
                server_version = await conn.fetchval("SHOW server_version_num")
            finally:
                await conn.close()
            server = f"server {self.target.name} {server_version}"
            chain = hashlib.sha256(f"snapshot-format {SNAPSHOT_FORMAT}\n{server}\n".encode())
            keys: dict[int | None, str] = {None: chain.hexdigest()}
            for migration in self.migrations.migrations:
                chain.update(f"{migration.version} {migration.sha256}\n".encode())
                keys[migration.version] = chain.hexdigest()
            self._keys = keys
        return self._keys

    async def _load_stored(self, wanted: Mapping[int | None, str]) -> None:
        async with self.server.catalog() as conn:
            stored = await catalog.expected_schemas(conn, list(wanted.values()))
        for key, data in stored.items():
            self.memory[key] = Snapshot.load(data)

    async def _build(self, keys: Mapping[int | None, str]) -> None:
        """Replay every file into one scratch database, taking a snapshot after each; always drop it.

        Every version is built at once: the replay to N passes through all lower versions anyway, and adoption
        compares against all of them. A file that fails to replay ends the build but keeps what came before it
        (a tenant below that file can still be checked); its failure is remembered for the versions it blocks.
        """
        name = scratch_prefix(self.catalog_database) + secrets.token_hex(4)
        # Not pool connections: a build must never wait for the pool that the checks waiting on it hold.
        lock = await self.server.connect(self.catalog_database)
        try:
            await lock.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, name)
            admin = await self.target.connect(self.target.maintenance_database)
            try:
                await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
                self.builds += 1
                try:
                    built, failure = await self._replay(name)
                finally:
                    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            finally:
                await admin.close()
            for version, snap in built.items():
                await catalog.store_expected_schema(lock, keys[version], version, snap.dump())
                self.memory[keys[version]] = snap
            if failure is not None:
                self._failures.update((key, failure) for version, key in keys.items() if version not in built)
        finally:
            await lock.close()  # also releases the advisory lock

    async def _replay(self, database: str) -> tuple[dict[int | None, Snapshot], MigrationFailed | None]:
        conn = await self.target.connect(database)
        try:
            built: dict[int | None, Snapshot] = {None: await snapshot.read(conn)}
            for migration in self.migrations.migrations:
                try:
                    await runner.apply(conn, plan([migration]))
                except MigrationFailed as exc:
                    return built, exc
                built[migration.version] = await snapshot.read(conn)
            return built, None
        finally:
            await conn.close()

    async def drop_orphans(self) -> list[str]:
        """Drop scratch databases on the target whose builder died (their lock in the catalog is free); return their
        names."""
        dropped: list[str] = []
        async with self.server.catalog() as conn:
            admin = await self.target.connect(self.target.maintenance_database)
            try:
                names = await admin.fetch(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
                    scratch_prefix(self.catalog_database),
                )
                for row in names:
                    name = row["datname"]
                    if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, name):
                        continue  # a live build, here or in another replica
                    try:
                        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                        dropped.append(name)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_NAMESPACE, name)
            finally:
                await admin.close()
        return dropped


class DriftChecker:
    """Checks tenants against their expected schema and records every result in the catalog."""

    def __init__(
        self,
        servers: Servers,
        migrations: MigrationSet,
        settings: Settings,
        locks: TenantLocks,
        connections: TenantConnections,
    ) -> None:
        self.servers = servers
        self.server = servers.catalog
        self.migrations = migrations
        self.locks = locks
        self.connections = connections
        self._expected = {
            t.name: ExpectedSchemas(self.server, migrations, settings.catalog_database, target=t) for t in servers
        }

    @property
    def expected(self) -> ExpectedSchemas:
        """The expected schemas of the first server (the only one unless several are configured)."""
        return self._expected[self.servers.first.name]

    def expected_for(self, server: str) -> ExpectedSchemas:
        """The expected schemas of a tenant server; DatabaseUnavailable when it is not configured."""
        return self._expected[self.servers.target(server).name]

    async def drop_orphans(self) -> list[str]:
        """Scratch databases left by dead processes, dropped on every server that answers (one that does not is
        cleaned at a later start)."""
        dropped: list[str] = []
        for expected in self._expected.values():
            try:
                dropped += await expected.drop_orphans()
            except ServiceError as exc:
                log.warning("cannot look for scratch databases on %s: %s", expected.target.name, exc.message)
        return dropped

    async def check(self, tenant_id: str) -> DriftReport:
        """Check one tenant under its lock (so no migration runs meanwhile) and record the result.

        Raises TenantNotFound, TenantNotReady, TenantBusy, HistoryMismatch (its level is a version with no file).
        """
        validate_tenant_id(tenant_id)
        lease = await self.locks.acquire(tenant_id)
        try:
            return await self._check_tenant(lease.conn, tenant_id)
        finally:
            await lease.release()

    async def _check_tenant(self, conn: Conn, tenant_id: str) -> DriftReport:
        tenant = await catalog.get(conn, tenant_id)
        if tenant is None:
            raise TenantNotFound(tenant=tenant_id)
        if tenant.state != "ready":
            raise TenantNotReady(f"tenant is {tenant.state}", tenant=tenant_id, state=tenant.state)
        target = self.servers.target(tenant.server)
        # A read: a kept connection serves it (see service.connections).
        applied, live = await self.connections.run(target, tenant.database, _observe)
        return await self._record(conn, tenant.id, tenant.server, applied, live)

    async def check_locked(
        self, conn: Conn, tconn: Conn, tenant_id: str, *, server: str = DEFAULT_SERVER
    ) -> DriftReport:
        """Check a tenant whose lock the caller holds: ``conn`` on the catalog, ``tconn`` on its database."""
        applied, live = await _observe(tconn)
        return await self._record(conn, tenant_id, server, applied, live)

    async def _record(
        self, conn: Conn, tenant_id: str, server: str, applied: list[history.Applied], live: Snapshot
    ) -> DriftReport:
        version = max((a.version for a in applied), default=None)
        if version is not None and version not in self.migrations.by_version:
            raise HistoryMismatch(
                "the tenant's level has no migration file, so there is no expected schema to compare with",
                tenant=tenant_id,
                untracked=[version],
            )
        expected = await self.expected_for(server).get(version)
        differences = compare(expected, live)
        check = await catalog.record_drift(conn, tenant_id, version, [d.as_dict() for d in differences])
        return DriftReport.of(check)

    async def expected_schema(self, version: int) -> Snapshot:
        """What a database at ``version`` must contain. Raises VersionNotFound, MigrationFailed (replay failed)."""
        if version not in self.migrations.by_version:
            raise VersionNotFound(version=version)
        return await self.expected.get(version)

    async def latest(self, tenant_id: str) -> DriftReport | None:
        """The newest recorded check of a tenant, ``None`` if it was never checked."""
        async with self.server.catalog() as conn:
            found = await catalog.latest_drift(conn, [tenant_id])
        return DriftReport.of(found[tenant_id]) if tenant_id in found else None

    async def sweep(self, concurrency: int) -> SweepResult:
        """Check every ready tenant, ``concurrency`` at a time; a tenant busy with another operation, or whose server
        does not answer, is skipped."""
        tenants = await self._ready_tenants()
        for server in dict.fromkeys(t.server for t in tenants):  # build once per server, before the fan-out
            try:
                await self.expected_for(server).every()
            except ServiceError as exc:  # its tenants are skipped one by one with this error
                log.warning("expected schemas of server %s: %s", server, exc.message)
        gate = asyncio.Semaphore(concurrency)

        async def one(tenant_id: str) -> DriftReport | dict[str, str]:
            async with gate:
                lease = await self.locks.try_acquire(tenant_id)
                if lease is None:
                    return {"tenant": tenant_id, "code": "tenant_busy", "message": "another operation is running"}
                try:
                    return await self._check_tenant(lease.conn, tenant_id)
                except ServiceError as exc:
                    return {"tenant": tenant_id, "code": exc.code, "message": exc.message}
                finally:
                    await lease.release()

        results = await asyncio.gather(*(one(t.id) for t in tenants))
        reports = [r for r in results if isinstance(r, DriftReport)]
        return SweepResult(
            checked=len(reports),
            drifted=tuple(r.tenant for r in reports if not r.clean),
            skipped=tuple(r for r in results if isinstance(r, dict)),
        )

    async def _ready_tenants(self) -> list[Tenant]:
        found: list[Tenant] = []
        after: str | None = None
        async with self.server.catalog() as conn:
            while True:
                page = await catalog.page(conn, state="ready", after=after, limit=500)
                found.extend(page)
                if len(page) < 500:
                    return found
                after = page[-1].id


@contextlib.asynccontextmanager
async def upkeep(checker: DriftChecker, interval: float, concurrency: int) -> AsyncIterator[None]:
    """For the app's lifetime: drop scratch databases a dead process left, and sweep every ``interval`` (0: never)."""
    dropped = await checker.drop_orphans()
    if dropped:
        log.warning("dropped %d scratch database(s) left by a dead process", len(dropped))
    task = asyncio.create_task(sweep_periodically(checker, interval, concurrency)) if interval > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def sweep_periodically(checker: DriftChecker, interval: float, concurrency: int) -> None:
    """Sweep the fleet every ``interval`` seconds until cancelled; a failed sweep is logged and retried later."""
    while True:
        await asyncio.sleep(interval)
        try:
            result = await checker.sweep(concurrency)
        except ServiceError as exc:
            log.warning("drift sweep failed: %s", exc.message)
            continue
        except Exception:
            log.exception("drift sweep failed")
            continue
        log.info(
            "drift sweep: %d checked, %d drifted, %d skipped", result.checked, len(result.drifted), len(result.skipped)
        )


async def _observe(tconn: Conn) -> tuple[list[history.Applied], Snapshot]:
    """What a drift check reads in the tenant database: its level and its live schema (nothing is written)."""
    return await history.read(tconn), await snapshot.read(tconn)
