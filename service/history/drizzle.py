"""Where a database migrated by drizzle-kit stands: ``drizzle.__drizzle_migrations`` mapped to our versions.

drizzle-orm's migrator writes one row per file it ran: ``hash``, the sha256 of the file's raw bytes, and
``created_at``, the journal entry's ``when`` (not the time it ran). It runs a file only when that ``when`` is later
than the newest row's, so a file journaled with an older ``when`` is skipped, silently and for good. Mapping each
row to a version by hash (:attr:`service.migrations.Migration.drizzle_hash`) gives the true level: a version below
the newest applied one without a row is one drizzle skipped, which :func:`service.status.compute` reports as
``out_of_order``.

A row whose hash matches no file is *unknown*: the file was edited after drizzle ran it, or the row belongs to
another history. The hash cannot say which version it was, so a caller (adoption) must not treat a database with
unknown rows as matching the files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from service.history.migrations import Migration, MigrationSet
from service.history.table import Applied
from service.identifiers import quote_ident
from service.store.db import Conn

SCHEMA: Final = "drizzle"
TABLE: Final = "__drizzle_migrations"


@dataclass(frozen=True, slots=True)
class DrizzleRow:
    id: int
    hash: str
    # drizzle stores the journal entry's `when` (ms since the epoch) here.
    created_at: int | None


@dataclass(frozen=True, slots=True)
class DrizzleHistory:
    """Rows matched to files, as :class:`Applied` in version order, and the rows that match no file."""

    applied: tuple[Applied, ...]
    unknown: tuple[DrizzleRow, ...]


async def read_rows(conn: Conn, *, schema: str = SCHEMA, table: str = TABLE) -> list[DrizzleRow]:
    """drizzle's rows in the order it wrote them; ``[]`` when the database has no such table."""
    name = f"{quote_ident(schema)}.{quote_ident(table)}"
    if await conn.fetchval("SELECT to_regclass($1) IS NULL", name):
        return []
    rows = await conn.fetch(f"SELECT id, hash, created_at FROM {name} ORDER BY id")
    return [DrizzleRow(id=r["id"], hash=r["hash"], created_at=r["created_at"]) for r in rows]


def match(rows: Sequence[DrizzleRow], migrations: MigrationSet) -> DrizzleHistory:
    """Map rows to versions by drizzle's hash.

    Two files with identical bytes share a hash; their rows are given to those versions in version order. The
    :class:`Applied` values carry the file's own ``sha256``, ``how="applied"`` (by drizzle), no duration, and the
    journal ``when`` as ``applied_at``: drizzle does not record when it ran a file.
    """
    by_hash: dict[str, list[Migration]] = {}
    for migration in migrations.migrations:
        by_hash.setdefault(migration.drizzle_hash, []).append(migration)
    applied: list[Applied] = []
    unknown: list[DrizzleRow] = []
    for row in rows:
        candidates = by_hash.get(row.hash)
        if not candidates:
            unknown.append(row)
            continue
        applied.append(_applied(candidates.pop(0), row))
    return DrizzleHistory(applied=tuple(sorted(applied, key=lambda a: a.version)), unknown=tuple(unknown))


async def read_drizzle_history(
    conn: Conn, migrations: MigrationSet, *, schema: str = SCHEMA, table: str = TABLE
) -> DrizzleHistory:
    """Where a drizzle-migrated database stands against ``migrations`` (see the module docstring)."""
    return match(await read_rows(conn, schema=schema, table=table), migrations)


def _applied(migration: Migration, row: DrizzleRow) -> Applied:
    return Applied(
        version=migration.version,
        name=migration.name,
        file=migration.file,
        sha256=migration.sha256,
        drizzle_hash=row.hash,
        applied_at=datetime.fromtimestamp((row.created_at or 0) / 1000, UTC),
        duration_ms=0.0,
        how="applied",
    )


async def ensure(conn: Conn, *, schema: str = SCHEMA, table: str = TABLE) -> None:
    """drizzle's table, created as drizzle-orm's pg migrator creates it."""
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.{quote_ident(table)} "
        "(id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint)"
    )


async def record(conn: Conn, done: Sequence[Migration], *, schema: str = SCHEMA, table: str = TABLE) -> None:
    """drizzle's rows for ``done``, in order, as drizzle writes them: the raw file's sha256 and the journal's
    ``when``; inside the caller's transaction, so they commit with the files. Files of no journal get none."""
    rows = [{"hash": m.drizzle_hash, "created_at": m.drizzle_when} for m in done if m.drizzle_when is not None]
    if not rows:
        return
    await conn.execute(
        f"""INSERT INTO {quote_ident(schema)}.{quote_ident(table)} (hash, created_at)
            SELECT r.hash, r.created_at
            FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS e(item, n),
                 jsonb_to_record(e.item) AS r(hash text, created_at bigint)
            ORDER BY e.n""",
        json.dumps(rows),
    )
