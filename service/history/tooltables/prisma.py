"""Prisma Migrate's ``_prisma_migrations``, as its PostgreSQL schema connector creates and fills it.

Before a script Prisma inserts ``(id, checksum, started_at, migration_name)``; after it, it adds one to
``applied_steps_count`` and sets ``finished_at``. The service does both, inside the script's transaction. Reading
it: finished rows not rolled back are applied, their checksums compared with the scripts (as Prisma does, with
either line ending); an unfinished row (a failed ``migrate deploy``) is refused.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

from service.history.migrations import Migration, MigrationSet
from service.history.tooltables.common import exists, refuse, unknown
from service.store.db import Conn

TOOL: Final = "prisma"
TABLE: Final = "_prisma_migrations"
_CREATE: Final = """
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)"""
# A retry of a file that runs outside a transaction finds its started row already there: it is not added twice.
_START: Final = """
INSERT INTO "_prisma_migrations" (id, checksum, started_at, migration_name)
SELECT $1, $2, clock_timestamp(), $3::varchar
WHERE NOT EXISTS (
    SELECT 1 FROM "_prisma_migrations" WHERE migration_name = $3::varchar AND finished_at IS NULL
    AND rolled_back_at IS NULL
)
"""
_FINISH: Final = """
UPDATE "_prisma_migrations" SET applied_steps_count = applied_steps_count + 1, finished_at = clock_timestamp()
WHERE migration_name = $1 AND finished_at IS NULL AND rolled_back_at IS NULL
"""
_READ: Final = """
SELECT migration_name, checksum, finished_at IS NOT NULL AS finished
FROM "_prisma_migrations" WHERE rolled_back_at IS NULL ORDER BY started_at
"""


async def before(conn: Conn, migration: Migration) -> None:
    origin = migration.origin
    assert origin is not None
    await conn.execute(_CREATE)
    await conn.execute(_START, str(uuid.uuid4()), origin.checksum, origin.name)


async def after(conn: Conn, migration: Migration, duration_ms: float) -> None:
    assert migration.origin is not None
    await conn.execute(_FINISH, migration.origin.name)


def matches(script: bytes, checksum: str) -> bool:
    """Prisma's ``script_matches_checksum``: the script as it is, with LF, or with CRLF line endings."""
    text = script.decode("utf-8", errors="surrogateescape")
    variants = (text, text.replace("\r\n", "\n"), text.replace("\n", "\r\n"))
    return any(hashlib.sha256(v.encode("utf-8", errors="surrogateescape")).hexdigest() == checksum for v in variants)


async def read(conn: Conn, migrations: MigrationSet) -> tuple[Migration, ...] | None:
    if not await exists(conn, TABLE):
        return None
    by_name = {m.origin.name: m for m in migrations.migrations if m.origin is not None}
    applied: dict[str, Migration] = {}
    for row in await conn.fetch(_READ):
        name = row["migration_name"]
        if not row["finished"]:
            raise refuse(TOOL, TABLE, f"{name} started but did not finish (a failed migrate deploy): resolve it first")
        if name not in by_name:
            raise unknown(TOOL, TABLE, [name])
        migration = by_name[name]
        assert migration.origin is not None
        if row["checksum"] != migration.origin.checksum:
            raise refuse(
                TOOL,
                TABLE,
                f"{name} ran with checksum {row['checksum']}, but {migration.file} now has "
                f"{migration.origin.checksum} (the file was edited after Prisma ran it)",
                modified=[migration.version],
            )
        applied[name] = migration
    return tuple(sorted(applied.values(), key=lambda m: m.version))
