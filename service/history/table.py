"""The history table inside each tenant database: the source of truth for that tenant's level."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Final, Literal

import asyncpg

from service.history.migrations import Migration, SqlFile
from service.store.db import Conn

How = Literal["applied", "baselined", "cloned"]
HISTORY_SCHEMA: Final = "_tenants"


@cache
def ddl() -> str:
    """The tenant-side history tables (``_tenants``), created or completed idempotently."""
    return (files(__package__) / "history.sql").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    file: str
    sha256: str
    drizzle_hash: str
    applied_at: datetime
    duration_ms: float
    how: How
    # The newest hash an operator accepted for this version (POST /tenants/{id}/repair), if any.
    accepted_sha256: str | None = None
    # The tool that wrote the folder and the file's version there (history/layouts), if not ours or Drizzle's.
    tool: str | None = None
    tool_version: str | None = None

    @property
    def effective_sha256(self) -> str:
        """The hash the file must have now: the accepted one after a repair, else the one that ran."""
        return self.accepted_sha256 if self.accepted_sha256 is not None else self.sha256


@dataclass(frozen=True, slots=True)
class Repair:
    version: int
    old_sha256: str
    new_sha256: str


async def ensure(conn: Conn) -> None:
    await conn.execute(ddl())


async def read(conn: Conn) -> list[Applied]:
    """The applied versions in order, with any accepted repair; empty when the database has no history table.

    A tenant last migrated before repairs existed has no ``_tenants.repairs`` table: it reads as "no repairs".
    Outside a transaction the usual case is one query, and a missing table is learnt from its error (inside one,
    the error would abort the caller's transaction: the tables are looked up first).
    """
    if not conn.is_in_transaction():
        try:
            return _applied(await conn.fetch(_READ_WITH_REPAIRS))
        except asyncpg.UndefinedTableError:
            pass
    tables = await conn.fetchrow(
        "SELECT to_regclass('_tenants.history') IS NOT NULL AS history, to_regclass('_tenants.repairs') IS NOT NULL"
        " AS repairs"
    )
    assert tables is not None
    if not tables["history"]:
        return []
    return _applied(await conn.fetch(_READ_WITH_REPAIRS if tables["repairs"] else _READ))


def _applied(rows: list[asyncpg.Record]) -> list[Applied]:
    return [Applied(**dict(r)) for r in rows]


_READ: Final = """SELECT version, name, file, sha256, drizzle_hash, applied_at, duration_ms, how,
                         to_jsonb(h) ->> 'tool' AS tool, to_jsonb(h) ->> 'tool_version' AS tool_version
                  FROM _tenants.history h ORDER BY version"""
_READ_WITH_REPAIRS: Final = """
    SELECT h.version, h.name, h.file, h.sha256, h.drizzle_hash, h.applied_at, h.duration_ms, h.how,
           r.new_sha256 AS accepted_sha256, to_jsonb(h) ->> 'tool' AS tool,
           to_jsonb(h) ->> 'tool_version' AS tool_version
    FROM _tenants.history h
    LEFT JOIN LATERAL (
        SELECT new_sha256 FROM _tenants.repairs WHERE version = h.version ORDER BY id DESC LIMIT 1
    ) r ON true
    ORDER BY h.version"""


async def record_repairs(conn: Conn, repairs: list[Repair]) -> None:
    """Append accepted hashes (the caller has run :func:`ensure`); history rows themselves are never updated."""
    if not repairs:
        return
    await conn.execute(
        """INSERT INTO _tenants.repairs (version, old_sha256, new_sha256)
           SELECT version, old_sha256, new_sha256
           FROM jsonb_to_recordset($1::text::jsonb) AS r(version integer, old_sha256 text, new_sha256 text)""",
        _rows({"version": r.version, "old_sha256": r.old_sha256, "new_sha256": r.new_sha256} for r in repairs),
    )


async def record(conn: Conn, done: list[tuple[Migration, float]], how: How = "applied") -> None:
    """Insert history rows (migration, duration in ms) in one round trip, inside the caller's transaction."""
    if not done:
        return
    rows = [
        {
            "version": m.version,
            "name": m.name,
            "file": m.file,
            "sha256": m.sha256,
            "drizzle_hash": m.drizzle_hash,
            "duration_ms": ms,
            **({"tool": m.origin.tool, "tool_version": m.origin.version} if m.origin is not None else {}),
        }
        for m, ms in done
    ]
    # A tenant of an NNNN or Drizzle folder may predate the tool columns (ensure runs only on its first migrate).
    with_tool = any(m.origin is not None for m, _ in done)
    await conn.execute(_INSERT_WITH_TOOL if with_tool else _INSERT, _rows(rows), how)


_INSERT: Final = """
    INSERT INTO _tenants.history (version, name, file, sha256, drizzle_hash, duration_ms, how)
    SELECT version, name, file, sha256, drizzle_hash, duration_ms, $2
    FROM jsonb_to_recordset($1::text::jsonb) AS r(version integer, name text, file text, sha256 text,
                                                  drizzle_hash text, duration_ms double precision)"""
_INSERT_WITH_TOOL: Final = """
    INSERT INTO _tenants.history (version, name, file, sha256, drizzle_hash, duration_ms, how, tool, tool_version)
    SELECT version, name, file, sha256, drizzle_hash, duration_ms, $2, tool, tool_version
    FROM jsonb_to_recordset($1::text::jsonb) AS r(version integer, name text, file text, sha256 text,
                                                  drizzle_hash text, duration_ms double precision, tool text,
                                                  tool_version text)"""


def _rows(rows: Iterable[dict[str, object]]) -> str:
    """Rows as one JSON parameter. Not arrays of integers or floats: asyncpg looks those types up on every new
    connection with a catalog query that costs about 10 ms, more than a whole migration of one file."""
    return json.dumps(list(rows))


async def mark_cloned(conn: Conn) -> None:
    """In a tenant just cloned from a template, inside the caller's transaction: the rows the template's replay
    wrote become ``cloned`` (their applied_at and duration stay those of the template's build)."""
    await conn.execute("UPDATE _tenants.history SET how = 'cloned' WHERE how = 'applied'")


async def record_seeds(conn: Conn, done: list[tuple[SqlFile, float]]) -> None:
    if not done:
        return
    await conn.execute(
        """INSERT INTO _tenants.seeds (file, sha256, duration_ms)
           SELECT file, sha256, duration_ms
           FROM jsonb_to_recordset($1::text::jsonb) AS r(file text, sha256 text, duration_ms double precision)""",
        _rows({"file": f.file, "sha256": f.sha256, "duration_ms": ms} for f, ms in done),
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """A file left half-applied: ``statement`` (file numbering) is the last one committed, in part ``part``."""

    version: int
    file: str
    sha256: str
    part: int
    parts: int
    statement: int
    updated_at: datetime

    def error(self, tenant: str) -> dict[str, object]:
        """How a tenant holding this row is shown: ``failed``, at this file and part."""
        return {
            "code": "partially_applied",
            "message": (
                f"{self.file} is half-applied: committed up to statement {self.statement} (part {self.part} of "
                f"{self.parts}); POST /tenants/{tenant}/migrate resumes it after that statement"
            ),
            "version": self.version,
            "file": self.file,
            "part": self.part,
            "parts": self.parts,
            "statement": self.statement,
        }


_READ_PROGRESS: Final = """SELECT version, file, sha256, part, parts, statement, updated_at FROM _tenants.progress
                           ORDER BY version LIMIT 1"""


async def read_progress(conn: Conn) -> Progress | None:
    """The half-applied file, if any; ``None`` also when the table does not exist (nothing ever ran in parts).

    One query outside a transaction (a missing table is learnt from its error), two inside one.
    """
    if conn.is_in_transaction():
        if not await conn.fetchval("SELECT to_regclass('_tenants.progress') IS NOT NULL"):
            return None
        row = await conn.fetchrow(_READ_PROGRESS)
    else:
        try:
            row = await conn.fetchrow(_READ_PROGRESS)
        except asyncpg.UndefinedTableError:
            return None
    return None if row is None else Progress(**dict(row))


async def read_state(conn: Conn) -> tuple[list[Applied], Progress | None]:
    """The applied versions and the half-applied file, if any: what a tenant's status is computed from."""
    return await read(conn), await read_progress(conn)


async def set_progress(conn: Conn, migration: Migration, part: int, statement: int) -> None:
    """Record that ``migration`` has committed through ``statement`` (in the caller's transaction, if any)."""
    await conn.execute(
        """INSERT INTO _tenants.progress (version, file, sha256, part, parts, statement)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (version) DO UPDATE SET part = EXCLUDED.part, statement = EXCLUDED.statement,
                                               updated_at = clock_timestamp()""",
        migration.version,
        migration.file,
        migration.sha256,
        part,
        len(migration.parts),
        statement,
    )


async def clear_progress(conn: Conn, version: int) -> None:
    await conn.execute("DELETE FROM _tenants.progress WHERE version = $1", version)
