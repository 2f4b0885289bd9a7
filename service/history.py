"""The history table inside each tenant database: the source of truth for that tenant's level."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from service import sql
from service.db import Conn
from service.migrations import Migration, SqlFile

How = Literal["applied", "baselined", "cloned"]
HISTORY_SCHEMA: Final = "_tenants"


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
    await conn.execute(sql.load("history.sql"))


async def read(conn: Conn) -> list[Applied]:
    """The applied versions in order, with any accepted repair; empty when the database has no history table.

    A tenant last migrated before repairs existed has no ``_tenants.repairs`` table: it reads as "no repairs".
    """
    tables = await conn.fetchrow(
        "SELECT to_regclass('_tenants.history') IS NOT NULL AS history, to_regclass('_tenants.repairs') IS NOT NULL"
        " AS repairs"
    )
    assert tables is not None
    if not tables["history"]:
        return []
    rows = await conn.fetch(_READ_WITH_REPAIRS if tables["repairs"] else _READ)
    return [Applied(**dict(r)) for r in rows]


_READ: Final = """SELECT version, name, file, sha256, drizzle_hash, applied_at, duration_ms, how
                  FROM _tenants.history ORDER BY version"""
_READ_WITH_REPAIRS: Final = """
    SELECT h.version, h.name, h.file, h.sha256, h.drizzle_hash, h.applied_at, h.duration_ms, h.how,
           r.new_sha256 AS accepted_sha256
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
           SELECT * FROM unnest($1::int[], $2::text[], $3::text[])""",
        [r.version for r in repairs],
        [r.old_sha256 for r in repairs],
        [r.new_sha256 for r in repairs],
    )


async def record(conn: Conn, done: list[tuple[Migration, float]], how: How = "applied") -> None:
    """Insert history rows (migration, duration in ms) in one round trip, inside the caller's transaction."""
    if not done:
        return
    await conn.execute(
        """INSERT INTO _tenants.history (version, name, file, sha256, drizzle_hash, duration_ms, how)
           SELECT *, $7 FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[])""",
        [m.version for m, _ in done],
        [m.name for m, _ in done],
        [m.file for m, _ in done],
        [m.sha256 for m, _ in done],
        [m.drizzle_hash for m, _ in done],
        [ms for _, ms in done],
        how,
    )


async def mark_cloned(conn: Conn) -> None:
    """In a tenant just cloned from a template, inside the caller's transaction: the rows the template's replay
    wrote become ``cloned`` (their applied_at and duration stay those of the template's build)."""
    await conn.execute("UPDATE _tenants.history SET how = 'cloned' WHERE how = 'applied'")


async def record_seeds(conn: Conn, done: list[tuple[SqlFile, float]]) -> None:
    if not done:
        return
    await conn.execute(
        """INSERT INTO _tenants.seeds (file, sha256, duration_ms)
           SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])""",
        [f.file for f, _ in done],
        [f.sha256 for f, _ in done],
        [ms for _, ms in done],
    )
