"""Template databases: the fast path of ``"strategy": "clone"``.

On each server the service keeps one template database per migration set, ``<catalog>_tpl_<hash8>``: the hash
covers every file's version, sha256 and transaction mode, the tenant-side history DDL and :data:`TEMPLATE_FORMAT`,
so an added or edited file names a new template. A template is built by replaying the full history once, with
the same runner and batches as a replayed tenant (so it holds the same objects and the same history rows), and
checked against the expected snapshot of the latest version (:mod:`service.drift`): one with any difference is
never used. Tenants are then made with ``CREATE DATABASE … TEMPLATE <tpl>``; the caller seeds and grants, and
:func:`service.runner.seed_cloned` turns the copied history rows into ``cloned`` ones.

A build is race-safe and crash-safe:

1. It runs under a session advisory lock in the catalog database, one per server (``server_key``): builds,
   renames and drops of one server's templates happen one at a time across tasks, processes and replicas. In a
   process, tasks that need the template while one of them builds it wait for that build, and share its failure.
2. Under the lock, a finished template of the current set (a template with connections off) is simply used.
   Otherwise temporaries on that server are left over (their builder died: we hold the lock) and are dropped, as
   is anything unfinished under the template's own name.
3. The build replays into a temporary database, ``<template>_<random>``, then checks it; any failure drops it.
4. Only a checked build is finished: ``IS_TEMPLATE true``, ``ALLOW_CONNECTIONS false``, then renamed to its final
   name, so that name exists only on a finished, checked template (nobody can connect to it and change it).
5. Then the templates of other sets on that server are dropped. A replica still running an older set (a rolling
   deploy) finds its template gone when it clones (``3D000``) and builds it again, once, without dropping the
   other sets' templates (that would start a tug of war); the next build of a new set drops what is left.

Temporaries left by a dead builder are dropped at start (:meth:`Template.drop_orphans`) and by the next build.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import asyncpg

from service.errors import MigrationFailed, ServiceError
from service.history import runner
from service.history import table as history
from service.history.migrations import MigrationSet, plan
from service.history.origin import digest_part
from service.identifiers import quote_ident
from service.schema import snapshot
from service.schema.compare import compare
from service.schema.snapshot import Snapshot
from service.store.db import INVALID_CATALOG_NAME, LOCK_NAMESPACE, Conn, PostgresError, sqlstate

log = logging.getLogger(__name__)

# Bump when a template is built differently: every server then builds a template under the new name.
TEMPLATE_FORMAT: Final = 1
_MARK: Final = "_tpl_"
_HASH_CHARS: Final = 8
_TEMP_SUFFIX_CHARS: Final = 7  # "_" + 6 hex digits
# How CREATE DATABASE copies a template (PostgreSQL 15+; 14 has only the file copy and no STRATEGY option).
# WAL_LOG, measured (bench/RESULTS.md, "Clone strategy"): for a template of the default history (~8 MB) it is
# about 3x faster than FILE_COPY one at a time, and about 2x at 8 at once, on a durable PostgreSQL 18 and on
# PostgreSQL 15. FILE_COPY forces two checkpoints per database, which flush whatever else the server has dirty;
# WAL_LOG writes the template's blocks to the WAL, which is little for a small template.
CLONE_STRATEGY: Final = "WAL_LOG"
_STRATEGY_SINCE: Final = 150000
# Differences named in the error of a template that failed its check.
_DIFFERENCES_SHOWN: Final = 20


class Connect(Protocol):
    """Opens an admin connection to a database of the server the template lives on (``Server.connect``)."""

    def __call__(self, database: str, **kwargs: Any) -> Awaitable[asyncpg.Connection]: ...


class Expected(Protocol):
    """The expected snapshots of that server (:class:`service.drift.ExpectedSchemas`)."""

    async def get(self, version: int | None) -> Snapshot: ...


def set_digest(migrations: MigrationSet) -> str:
    """What a template is built from: the files (version, hash, transaction mode) and the history DDL."""
    h = hashlib.sha256(f"template-format {TEMPLATE_FORMAT}\n".encode())
    h.update(hashlib.sha256(history.ddl().encode()).digest())
    for m in migrations.migrations:
        h.update(f"{m.version} {m.sha256} {m.transactional}{digest_part(m.origin)}\n".encode())
    return h.hexdigest()


def template_prefix(catalog_database: str) -> str:
    """Names of template databases (finished or being built) start with this; cut so every name fits in 63."""
    return catalog_database[: 63 - len(_MARK) - _HASH_CHARS - _TEMP_SUFFIX_CHARS] + _MARK


def template_name(catalog_database: str, migrations: MigrationSet) -> str:
    return template_prefix(catalog_database) + set_digest(migrations)[:_HASH_CHARS]


class Template:
    """The template database of one migration set on one server.

    ``connect`` opens admin connections to databases of that server; ``admin_database`` is one of them to run
    ``CREATE/ALTER/DROP DATABASE`` from (default: the catalog database); ``lock_connect`` opens a connection to
    the catalog database, where the build lock is taken (default: ``connect(catalog_database)``); ``server_key``
    names the server in that lock when several servers share one catalog. ``server_settings`` apply to the
    replay (the tenant's statement timeout). ``failpoint`` is called with the name of each step a crash test may
    kill the process at (``template.before_finish``).
    """

    def __init__(
        self,
        connect: Connect,
        migrations: MigrationSet,
        expected: Expected,
        *,
        catalog_database: str,
        admin_database: str | None = None,
        lock_connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
        server_key: str = "",
        server_settings: Mapping[str, str] | None = None,
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.connect = connect
        self.migrations = migrations
        self.expected = expected
        self.catalog_database = catalog_database
        self.admin_database = admin_database or catalog_database
        self.lock_connect = lock_connect or (lambda: connect(catalog_database))
        self.server_key = server_key
        self.server_settings = dict(server_settings or {})
        self._failpoint = failpoint or (lambda _: None)
        self.prefix = template_prefix(catalog_database)
        self.name = template_name(catalog_database, migrations)
        self.builds = 0  # templates built by this instance (tests and the benchmark read it)
        self._ready = False
        self._strategy = ""  # the STRATEGY clause of CREATE DATABASE, once the server's version is known
        self._guard = asyncio.Lock()
        # A failed build and its number: tasks that waited for that build fail with it instead of building again.
        self._failures = 0
        self._failure: ServiceError | None = None

    @property
    def _lock_key(self) -> str:
        return f"template:{self.server_key}"

    # -- use ------------------------------------------------------------------------------------------------

    async def create_database(self, admin: Conn, database: str) -> None:
        """``CREATE DATABASE database TEMPLATE <template>`` on ``admin``, a connection to the template's server.

        The template is built first when there is none. If it vanished since (a replica running another set
        dropped it), it is built again, once. Raises MigrationFailed (the build failed or its check found
        differences; nothing is left behind), DatabaseUnavailable, and whatever ``CREATE DATABASE`` raises.
        """
        name = await self.ensure()
        try:
            await admin.execute(self._create_sql(database, name))
        except PostgresError as exc:
            if sqlstate(exc) != INVALID_CATALOG_NAME:  # CREATE DATABASE says 3D000 only of its template
                raise
            log.warning("template %s is gone; building it again", name)
            self._ready = False
            # Whoever dropped it runs another set (a rolling deploy): keep theirs, or they would drop ours again.
            name = await self.ensure(keep_others=True)
            await admin.execute(self._create_sql(database, name))

    def _create_sql(self, database: str, name: str) -> str:
        return f"CREATE DATABASE {quote_ident(database)} TEMPLATE {quote_ident(name)}{self._strategy}"

    async def ensure(self, *, keep_others: bool = False) -> str:
        """The name of the finished, checked template of this set, built if there is none.

        A build then drops the templates of other sets on the server, unless ``keep_others``.
        """
        if self._ready:
            return self.name
        failures = self._failures
        async with self._guard:
            if self._ready:
                return self.name
            if self._failures != failures and self._failure is not None:
                # The build this task waited for failed: the same files would fail the same way now.
                raise type(self._failure)(self._failure.message, **self._failure.details)
            try:
                await self._ensure_locked(keep_others)
            except ServiceError as exc:
                self._failures += 1
                self._failure = exc
                raise
            self._ready = True
        return self.name

    async def _ensure_locked(self, keep_others: bool) -> None:
        lock = await self.lock_connect()
        try:
            await lock.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, self._lock_key)
            admin = await self.connect(self.admin_database)
            try:
                version = int(await admin.fetchval("SHOW server_version_num"))
                self._strategy = f" STRATEGY {CLONE_STRATEGY}" if version >= _STRATEGY_SINCE else ""
                if await self._finished(admin):
                    return
                # We hold the lock: a temporary is left over, as is anything under our own name.
                await self._drop(admin, await self._others(admin, temporaries=True))
                await self._drop(admin, [self.name])
                await self._build(admin)
                if keep_others:
                    return
                try:
                    await self._drop(admin, await self._others(admin, temporaries=False))
                except PostgresError as exc:  # the new template is fine; the next build drops the old ones
                    log.warning("could not drop the templates of other migration sets: %s", exc)
            finally:
                await admin.close()
        finally:
            await lock.close()  # also releases the advisory lock

    async def _finished(self, admin: Conn) -> bool:
        row = await admin.fetchrow(
            "SELECT datistemplate AND NOT datallowconn AS finished FROM pg_database WHERE datname = $1", self.name
        )
        return row is not None and bool(row["finished"])

    # -- build ----------------------------------------------------------------------------------------------

    async def _build(self, admin: Conn) -> None:
        started = time.perf_counter()
        temp = f"{self.name}_{secrets.token_hex(3)}"
        await admin.execute(f"CREATE DATABASE {quote_ident(temp)} TEMPLATE template0")
        # Nobody but the builder may log in while it is built (on PostgreSQL <= 14 PUBLIC could also create in
        # its schema public, and what it made there would be copied into every tenant).
        await admin.execute(f"REVOKE CONNECT ON DATABASE {quote_ident(temp)} FROM PUBLIC")
        self.builds += 1
        try:
            conn = await self.connect(temp, server_settings=self.server_settings)
            try:
                await runner.apply(conn, plan(self.migrations.migrations))
                await self._check(conn)
            finally:
                await conn.close()
            self._failpoint("template.before_finish")
            await admin.execute(f"ALTER DATABASE {quote_ident(temp)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            await admin.execute(f"ALTER DATABASE {quote_ident(temp)} RENAME TO {quote_ident(self.name)}")
        except BaseException:
            await asyncio.shield(self._drop(admin, [temp]))
            raise
        log.info("template built", extra={"template": self.name, "duration_ms": round(_ms_since(started), 3)})

    async def _check(self, conn: Conn) -> None:
        """Refuse a build whose history or schema is not what replaying the files must give."""
        versions = [a.version for a in await history.read(conn)]
        if versions != [m.version for m in self.migrations.migrations]:
            raise MigrationFailed(f"template {self.name}: its history does not list every migration", history=versions)
        expected = await self.expected.get(self.migrations.latest_version)
        differences = compare(expected, await snapshot.read(conn))
        if differences:
            raise MigrationFailed(
                f"template {self.name} differs from the expected schema in {len(differences)} place(s); not used",
                differences=[d.as_dict() for d in differences[:_DIFFERENCES_SHOWN]],
            )

    # -- clean up -------------------------------------------------------------------------------------------

    async def _others(self, admin: Conn, *, temporaries: bool) -> list[str]:
        """Temporaries (``<prefix><hash8>_<random>``) of any set, or the finished templates of other sets."""
        rows = await admin.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2 ORDER BY datname",
            self.prefix,
            self.name,
        )
        finished = len(self.prefix) + _HASH_CHARS
        return [r["datname"] for r in rows if (len(r["datname"]) > finished) == temporaries]

    async def _drop(self, admin: Conn, names: list[str]) -> None:
        for name in names:
            # PostgreSQL refuses to drop a template database: unmark it first.
            is_template = await admin.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", name)
            if is_template:
                await admin.execute(f"ALTER DATABASE {quote_ident(name)} WITH IS_TEMPLATE false")
            if is_template is not None:  # None: no such database
                await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                log.info("template database dropped", extra={"template": name})

    async def drop_orphans(self) -> list[str]:
        """At start: drop temporaries whose builder died (the build lock is free); return their names.

        Finished templates stay, also those of other sets (a replica may still run one); the next build drops them.
        """
        lock = await self.lock_connect()
        try:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_NAMESPACE, self._lock_key):
                return []  # a live build, here or in another replica
            admin = await self.connect(self.admin_database)
            try:
                names = await self._others(admin, temporaries=True)
                await self._drop(admin, names)
            finally:
                await admin.close()
            return names
        finally:
            await lock.close()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
