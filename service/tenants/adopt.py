"""Databases made outside the service: find them, tell their level, and bring them under management.

A database's level is read, never guessed, when it can be: from our history table, else from drizzle's rows
mapped by hash (:mod:`service.drizzle`). Only a database with neither is *inferred*: its live snapshot is compared
with the expected snapshot of every version, and only an exact match with exactly one version gives a level.
Anything else needs an operator's ``baseline_version``.

Adopting writes ``baselined`` history rows into the database (the one thing it adds: the ``_tenants`` schema) and a
catalog row with ``database_owned = false`` and what the database allowed before (:mod:`service.tenants.unadopt`):
the service never drops a database it did not create, neither when an adoption fails nor on ``DELETE``, which
gives an adopted tenant's database back as it was and forgets it. Existing objects and data are never
touched; with ``migrate`` the pending files then run under the usual rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import asyncpg

from service.config import DEFAULT_SERVER
from service.errors import (
    AdoptionAmbiguous,
    DatabaseNotAdoptable,
    DatabaseNotFound,
    HistoryMismatch,
    InvalidRequest,
    ServiceError,
    TenantBusy,
    TenantExists,
)
from service.history import drizzle, tooltables
from service.history import table as history
from service.history.migrations import Migration
from service.identifiers import validate_database_name, validate_tenant_id
from service.schema import snapshot
from service.schema.compare import Difference, compare
from service.schema.expected import scratch_prefix
from service.schema.template import template_prefix
from service.store import catalog
from service.store.db import LOCK_NAMESPACE, Conn, Target, sqlstate
from service.tenants import migrate, reads, unadopt
from service.tenants.context import Context
from service.tenants.placement import require
from service.tenants.status import SchemaStatus, compute
from service.tenants.steps import error_dict

Kind = Literal["managed", "unmanaged", "other", "internal"]
HistoryKind = Literal["tenants", "drizzle", "golang-migrate", "flyway", "dbmate", "goose", "prisma", "none"]
SYSTEM_DATABASES: Final = ("template0", "template1", "postgres")
# Databases opened at once while discovering.
_READS: Final = 8
# Second key of the advisory lock taken *inside* a database while it is being adopted (advisory locks are per
# database, so this excludes two adoptions of the same database whatever tenant ids they name).
_ADOPT_LOCK: Final = 0x41444F50
_LOCK_NOT_AVAILABLE: Final = "55P03"


@dataclass(frozen=True, slots=True)
class Discovered:
    name: str
    kind: Kind
    tenant: str | None
    history: HistoryKind
    version: int | None
    inferred: bool
    server: str = DEFAULT_SERVER


@dataclass(frozen=True, slots=True)
class Inference:
    """The live schema against every version's expected one (``None`` stands for "nothing applied")."""

    matches: tuple[int | None, ...]
    closest: int | None
    differences: tuple[Difference, ...]  # against ``closest``

    @property
    def exact(self) -> bool:
        return len(self.matches) == 1


@dataclass(frozen=True, slots=True)
class Level:
    history: HistoryKind
    version: int | None
    inferred: bool
    baseline: tuple[Migration, ...] = field(default=())  # history rows adoption must write


@dataclass(frozen=True, slots=True)
class AdoptRequest:
    tenant_id: str
    database: str
    migrate: bool = False
    baseline_version: int | None = None
    # The server the database is on (None: ``default``, or the only server); a replay may leave it out.
    server: str | None = None

    def fingerprint(self) -> str:
        """A replay names the same database; the migrate flag and baseline do not change what was adopted."""
        return hashlib.sha256(json.dumps({"adopt": self.database}).encode()).hexdigest()


class Adopter:
    """Discovery and adoption, on top of the provisioner's servers, locks, migrations and expected schemas."""

    def __init__(self, provisioner: Context) -> None:
        self.provisioner = provisioner
        self.server = provisioner.server
        self.servers = provisioner.servers
        self.migrations = provisioner.migrations
        self.settings = provisioner.settings

    # -- discovery ------------------------------------------------------------------------------------------

    async def discover(self, server: str | None = None) -> list[Discovered]:
        """Every database but template0, template1 and postgres, by server (in configuration order) and name;
        ``server`` limits it to one. Raises UnknownServer, DatabaseUnavailable (a listed server does not answer:
        a partial list would read as "no such database")."""
        targets = [require(self.servers, server)] if server is not None else list(self.servers)
        async with self.server.catalog() as conn:
            tenants = await self._tenants_by_database(conn)
        found: list[Discovered] = []
        for target in targets:
            found += await self._discover_on(target, tenants)
        return found

    async def _discover_on(self, target: Target, tenants: dict[tuple[str, str], catalog.Tenant]) -> list[Discovered]:
        async with target.admin() as admin:
            names = [
                r["datname"]
                for r in await admin.fetch(
                    "SELECT datname FROM pg_database WHERE datname <> ALL($1::text[]) ORDER BY datname",
                    list(SYSTEM_DATABASES),
                )
            ]
        gate = asyncio.Semaphore(_READS)

        async def one(name: str) -> Discovered:
            if self._is_internal(name):
                return Discovered(name, "internal", None, "none", None, False, target.name)
            tenant = tenants.get((target.name, name))
            if tenant is not None:
                return Discovered(name, "managed", tenant.id, "tenants", tenant.version, False, target.name)
            async with gate:
                return await self._probe(target, name)

        return list(await asyncio.gather(*(one(n) for n in names)))

    async def _tenants_by_database(self, conn: Conn) -> dict[tuple[str, str], catalog.Tenant]:
        found: dict[tuple[str, str], catalog.Tenant] = {}
        after: str | None = None
        while True:
            page = await catalog.page(conn, state=None, after=after, limit=500)
            found.update(((t.server, t.database), t) for t in page)
            if len(page) < 500:
                return found
            after = page[-1].id

    def _is_internal(self, name: str) -> bool:
        """The service's own databases: the catalog, its scratch databases and its template databases."""
        catalog_database = self.settings.catalog_database
        return (
            name == catalog_database
            or name.startswith(scratch_prefix(catalog_database))
            or name.startswith(template_prefix(catalog_database))
        )

    async def _probe(self, target: Target, name: str) -> Discovered:
        tenant_like = name.startswith(self.settings.db_prefix)
        unreadable = Discovered(name, "unmanaged" if tenant_like else "other", None, "none", None, False, target.name)
        try:
            tconn = await target.connect(name)
        except (ServiceError, asyncpg.PostgresError):
            return unreadable  # not ours to open (no CONNECT privilege, datallowconn off): only its name speaks
        try:
            level = await self._recorded_level(tconn, strict=False)
            if level is None and tenant_like:
                inference = await self.infer(tconn, target.name)
                version = inference.matches[0] if inference.exact else None
                level = Level("none", version, version is not None)
        except asyncpg.PostgresError:
            return unreadable  # e.g. a history table we may not read
        finally:
            await tconn.close()
        if level is None:
            return unreadable
        return Discovered(name, "unmanaged", None, level.history, level.version, level.inferred, target.name)

    async def _recorded_level(self, tconn: Conn, *, strict: bool) -> Level | None:
        """The level our history or drizzle's records; ``None`` when the database has neither.

        With ``strict`` (adoption) a history that disagrees with the files raises HistoryMismatch.
        """
        applied = await history.read(tconn)
        if applied:
            status = compute("", "", applied, self.migrations)
            if strict and (status.modified or status.untracked):
                raise HistoryMismatch(
                    modified=[m.version for m in status.modified], untracked=[u.version for u in status.untracked]
                )
            return Level("tenants", status.current_version, False)
        tool = await self._tool_level(tconn, strict=strict)
        if tool is not None:
            return tool
        found = await drizzle.read_drizzle_history(tconn, self.migrations)
        if not found.applied and not found.unknown:
            return None
        if strict and found.unknown:
            raise HistoryMismatch(
                "drizzle's history has rows that match no migration file (edited files, or another history)",
                unknown_hashes=[r.hash for r in found.unknown],
            )
        by_version = self.migrations.by_version
        versions = [a.version for a in found.applied]
        return Level("drizzle", max(versions, default=None), False, tuple(by_version[v] for v in versions))

    async def _tool_level(self, tconn: Conn, *, strict: bool) -> Level | None:
        """The level the folder's tool table records (history/tooltables); ``None`` without one. With ``strict``
        a table that disagrees with the files (unknown versions, checksums, golang-migrate dirty, a failed Flyway
        or Prisma row) raises HistoryMismatch; without, it reads as an unknown level."""
        kind = cast(HistoryKind, self.migrations.layout)
        try:
            applied = await tooltables.read(tconn, self.migrations)
        except HistoryMismatch:
            if strict:
                raise
            return Level(kind, None, False)
        if applied is None:
            return None
        return Level(kind, max((m.version for m in applied), default=None), False, applied)

    async def infer(self, tconn: Conn, server: str = DEFAULT_SERVER) -> Inference:
        """Compare the live schema with every version's expected schema on its server (built once, then cached)."""
        live = await snapshot.read(tconn)
        every = await self.provisioner.drift.expected_for(server).every()
        scored = [(version, compare(expected, live)) for version, expected in every.items()]
        matches = tuple(v for v, diffs in scored if not diffs)
        # Fewest differences first; on a tie the higher version, which leaves less to apply.
        closest, differences = min(scored, key=lambda s: (len(s[1]), -(-1 if s[0] is None else s[0])))
        return Inference(matches=matches, closest=closest, differences=tuple(differences))

    # -- adoption -------------------------------------------------------------------------------------------

    async def adopt(self, request: AdoptRequest) -> tuple[SchemaStatus, bool]:
        """Adopt a database as a tenant, then migrate it if asked; ``(status, adopted)``, False for a replay.

        Raises InvalidRequest (bad name or baseline), DatabaseNotAdoptable (system, internal or another tenant's),
        DatabaseNotFound, TenantExists, HistoryMismatch (its history disagrees with the files), AdoptionAmbiguous
        (no single version matches and no baseline_version was named), TenantBusy; with ``migrate``, whatever
        a migration run raises (the database stays adopted at its baselined level).
        """
        validate_tenant_id(request.tenant_id)
        database = self._adoptable_name(request.database)
        target = self._server_of(request.server)
        if request.baseline_version is not None and request.baseline_version not in self.migrations.by_version:
            raise InvalidRequest(f"no migration has version {request.baseline_version}", parameter="baseline_version")
        lease = await self.provisioner.locks.acquire(request.tenant_id)
        try:
            existing = await catalog.get(lease.conn, request.tenant_id)
            if existing is not None:
                if (
                    existing.state != "ready"
                    or existing.request_sha256 != request.fingerprint()
                    or request.server not in (None, existing.server)
                ):
                    raise TenantExists(tenant=request.tenant_id)
                adopted = False
            else:
                await self._adopt_locked(lease.conn, request, target, database)
                adopted = True
        finally:
            await lease.release()
        if request.migrate:
            return await migrate.migrate(self.provisioner, request.tenant_id), adopted
        return await reads.schema(self.provisioner, request.tenant_id), adopted

    def _server_of(self, name: str | None) -> Target:
        """The named server, else ``default``, else the only one. Raises UnknownServer, InvalidRequest."""
        if name is not None:
            return require(self.servers, name)
        found = self.servers.get(DEFAULT_SERVER)
        if found is not None:
            return found
        if len(self.servers) == 1:
            return self.servers.first
        raise InvalidRequest(
            "several database servers are configured: name the one the database is on",
            parameter="server",
            servers=self.servers.names,
        )

    def _adoptable_name(self, name: str) -> str:
        try:
            validate_database_name(name)
        except ValueError as exc:
            raise InvalidRequest(str(exc), parameter="database") from exc
        if name in SYSTEM_DATABASES or self._is_internal(name):
            raise DatabaseNotAdoptable(f"{name} is a system or internal database", database=name)
        return name

    async def _adopt_locked(self, conn: Conn, request: AdoptRequest, target: Target, database: str) -> None:
        if not await target.database_exists(database):
            raise DatabaseNotFound(database=database, server=target.name)
        tconn = await target.connect(database)
        try:
            await self._lock_database(tconn, database)
            owner = await catalog.get_by_database(conn, database, target.name)
            if owner is not None:
                raise DatabaseNotAdoptable(
                    f"{database} is already managed as tenant {owner.id}", database=database, tenant=owner.id
                )
            level = await self._adoption_level(tconn, target, database, request.baseline_version)
            detail = {"database": database, "history": level.history, "version": level.version}
            op = await catalog.begin_operation(conn, request.tenant_id, "adopt", {**detail, "inferred": level.inferred})
            try:
                before = await unadopt.observe(tconn)
                await self._baseline(tconn, level.baseline)
                async with conn.transaction():
                    await catalog.insert(
                        conn, request.tenant_id, request.tenant_id, database, request.fingerprint(), server=target.name
                    )
                    await catalog.set_adoption(conn, request.tenant_id, before)
                    await catalog.mark(conn, request.tenant_id, "ready", version=level.version)
            except ServiceError as exc:
                await catalog.end_operation(conn, op, error_dict(exc))
                raise
            await catalog.end_operation(conn, op)
        finally:
            await tconn.close()

    async def _lock_database(self, tconn: Conn, database: str) -> None:
        await tconn.execute(f"SET lock_timeout = {int(self.settings.busy_timeout * 1000)}")
        try:
            await tconn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_NAMESPACE, _ADOPT_LOCK)
        except asyncpg.PostgresError as exc:
            if sqlstate(exc) == _LOCK_NOT_AVAILABLE:
                raise TenantBusy("another adoption of this database is in progress", database=database) from exc
            raise
        await tconn.execute("SET lock_timeout = 0")

    async def _adoption_level(self, tconn: Conn, target: Target, database: str, baseline_version: int | None) -> Level:
        recorded = await self._recorded_level(tconn, strict=True)
        if recorded is not None:
            if baseline_version is not None:
                raise InvalidRequest(
                    f"{database} has a {recorded.history} history; baseline_version is only for databases without one",
                    parameter="baseline_version",
                )
            return recorded
        if baseline_version is not None:
            return Level("none", baseline_version, False, self._upto(baseline_version))
        inference = await self.infer(tconn, target.name)
        if inference.exact:
            version = inference.matches[0]
            return Level("none", version, True, self._upto(version))
        raise AdoptionAmbiguous(
            _ambiguity(database, inference),
            database=database,
            matching_versions=list(inference.matches),
            closest_version=inference.closest,
            differences=[d.as_dict() for d in inference.differences],
        )

    def _upto(self, version: int | None) -> tuple[Migration, ...]:
        if version is None:
            return ()
        return tuple(m for m in self.migrations.migrations if m.version <= version)

    async def _baseline(self, tconn: Conn, migrations: Sequence[Migration]) -> None:
        if not migrations:
            return
        async with tconn.transaction():
            await history.ensure(tconn)
            await history.record(tconn, [(m, 0.0) for m in migrations], how="baselined")


def _ambiguity(database: str, inference: Inference) -> str:
    if inference.matches:
        versions = ", ".join("none" if v is None else f"{v:04d}" for v in inference.matches)
        return f"the schema of {database} matches several versions ({versions}); name baseline_version"
    closest = "nothing applied" if inference.closest is None else f"version {inference.closest:04d}"
    return (
        f"the schema of {database} matches no version exactly; closest is {closest} with "
        f"{len(inference.differences)} difference(s); name baseline_version to adopt it anyway"
    )
