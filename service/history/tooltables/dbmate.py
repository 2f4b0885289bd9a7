"""dbmate's ``schema_migrations``: one row per applied file, ``version varchar primary key``.

dbmate creates the table if missing and inserts the file's version after the up section, in the section's
transaction (or after it, for ``transaction:false``); the service does the same. Reading it: the files whose
versions it lists are applied; a version no file has is refused.
"""

from __future__ import annotations

from typing import Final

from service.history.migrations import Migration, MigrationSet
from service.history.tooltables.common import by_tool_version, exists, unknown
from service.store.db import Conn

TOOL: Final = "dbmate"
TABLE: Final = "schema_migrations"
_CREATE: Final = 'CREATE TABLE IF NOT EXISTS "schema_migrations" (version varchar primary key)'
_INSERT: Final = 'INSERT INTO "schema_migrations" (version) VALUES ($1)'


async def before(conn: Conn, migration: Migration) -> None:
    await conn.execute(_CREATE)


async def after(conn: Conn, migration: Migration, duration_ms: float) -> None:
    assert migration.origin is not None
    await conn.execute(_INSERT, migration.origin.version)


async def read(conn: Conn, migrations: MigrationSet) -> tuple[Migration, ...] | None:
    if not await exists(conn, TABLE):
        return None
    versions = [str(r["version"]) for r in await conn.fetch('SELECT version FROM "schema_migrations"')]
    known = by_tool_version(migrations)
    missing = [v for v in versions if v not in known]
    if missing:
        raise unknown(TOOL, TABLE, missing)
    return tuple(sorted((known[v] for v in versions), key=lambda m: m.version))
