"""The expected schema of each version: what replaying 0000..N into an empty database gives.

Built once per server tenants live on, in a scratch database on that server (its version, its extensions) that is
always dropped afterwards, and kept by a key that hashes the files, the snapshot format, the server's name and its
version: an edited file simply misses the cache, and two servers never share a snapshot that one of them would have
built differently. Snapshots are kept in this process and in the catalog, so a restart reads them back instead of
replaying. Seed files are not replayed: they write data, and data is not schema.

A scratch database is named ``<catalog>_scratch_<random>`` and is guarded by a session advisory lock on its name
for as long as it exists; one whose lock is free was left by a dead process and is dropped at the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Final

from service.config import DEFAULT_SERVER
from service.errors import ExpectedSchemaUnbuildable, MigrationFailed
from service.history import runner
from service.history.migrations import MigrationSet, plan
from service.history.origin import digest_part
from service.identifiers import quote_ident
from service.schema import snapshot
from service.schema.snapshot import Snapshot
from service.store import catalog
from service.store.db import LOCK_NAMESPACE, Server, Target

# Bump when snapshot.py reads or renders anything differently: every cached expected schema is then rebuilt.
SNAPSHOT_FORMAT: Final = 1
_SCRATCH: Final = "_scratch_"


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

        Raises ExpectedSchemaUnbuildable (a MigrationFailed) when a file fails to replay into an empty database.
        """
        return (await self.some([version]))[version]

    async def every(self) -> dict[int | None, Snapshot]:
        """The expected snapshot of ``None`` (nothing applied) and of every version up to the first that fails to
        replay, if one does."""
        return await self.some([None, *(m.version for m in self.migrations.migrations)], partial=True)

    async def some(self, versions: Iterable[int | None], *, partial: bool = False) -> dict[int | None, Snapshot]:
        """The expected snapshots of ``versions``; without ``partial``, ExpectedSchemaUnbuildable when one cannot
        be built."""
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
                chain.update(f"{migration.version} {migration.sha256}{digest_part(migration.origin)}\n".encode())
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
                await admin.execute(f"REVOKE CONNECT ON DATABASE {quote_ident(name)} FROM PUBLIC")
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
                unbuildable = _unbuildable(failure)
                self._failures.update((key, unbuildable) for version, key in keys.items() if version not in built)
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


def _unbuildable(failure: MigrationFailed) -> ExpectedSchemaUnbuildable:
    """A replay failure as the caller's problem (409 naming the file), not the service's (500): the files are
    wrong for an empty database, and a fixed file is replayed again on the next request (a new hash)."""
    unbuildable = ExpectedSchemaUnbuildable(
        f"the expected schema cannot be built: {failure.message}", **failure.details
    )
    unbuildable.__cause__ = failure
    return unbuildable
