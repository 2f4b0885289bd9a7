"""golang-migrate's ``schema_migrations``: one row, ``(version, dirty)``, as its postgres driver keeps it.

Before a file golang-migrate sets ``(version, true)`` and after it ``(version, false)``, each time by ``TRUNCATE``
then ``INSERT``; the service does the same, inside the file's transaction, so a file that reads or alters the
table sees what it would under golang-migrate. Reading it: every file up to the recorded version is applied;
``dirty = true`` (a file failed half-way under golang-migrate) is refused.
"""

from __future__ import annotations

from typing import Final

from service.history.migrations import Migration, MigrationSet
from service.history.tooltables.common import by_tool_version, exists, refuse, unknown
from service.store.db import Conn

TOOL: Final = "golang-migrate"
TABLE: Final = "schema_migrations"
_CREATE: Final = (
    'CREATE TABLE IF NOT EXISTS "schema_migrations" (version bigint not null primary key, dirty boolean not null)'
)
_TRUNCATE: Final = 'TRUNCATE "schema_migrations"'
_INSERT: Final = 'INSERT INTO "schema_migrations" (version, dirty) VALUES ($1, $2)'


async def before(conn: Conn, migration: Migration) -> None:
    await conn.execute(_CREATE)
    await _set(conn, migration, dirty=True)


async def after(conn: Conn, migration: Migration, duration_ms: float) -> None:
    await _set(conn, migration, dirty=False)


async def _set(conn: Conn, migration: Migration, *, dirty: bool) -> None:
    assert migration.origin is not None
    await conn.execute(_TRUNCATE)
    await conn.execute(_INSERT, int(migration.origin.version), dirty)


async def read(conn: Conn, migrations: MigrationSet) -> tuple[Migration, ...] | None:
    if not await exists(conn, TABLE):
        return None
    row = await conn.fetchrow('SELECT version, dirty FROM "schema_migrations" LIMIT 1')
    if row is None:
        return ()
    version, dirty = str(row["version"]), bool(row["dirty"])
    if dirty:
        raise refuse(
            TOOL,
            TABLE,
            f"version {version} is dirty: a file failed half-way under golang-migrate. Check the database, then "
            f"`migrate force` the right version before adopting it",
            dirty_version=int(version),
        )
    known = by_tool_version(migrations)
    if version not in known:
        raise unknown(TOOL, TABLE, [version])
    level = known[version].version
    return tuple(m for m in migrations.migrations if m.version <= level)
