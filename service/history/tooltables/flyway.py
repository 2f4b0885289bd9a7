"""Flyway's ``flyway_schema_history``, with Flyway's checksums, as its PostgreSQL support creates and fills it.

The table is created as Flyway's ``PostgreSQLDatabase.getRawCreateScript`` creates it (primary key
``flyway_schema_history_pk``, index ``flyway_schema_history_s_idx``); after each file a row: the next
``installed_rank``, the version as Flyway prints it, the description, type ``SQL``, the script path, the CRC32
checksum (:func:`service.history.layouts.flyway.checksum`), ``current_user``, the execution time in ms and
``success = true``. Reading it: ``SQL`` rows by version, their checksums compared with the files (a difference is
``history_mismatch``); a ``BASELINE`` row applies every file up to its version; ``UNDO_SQL`` un-applies its
version; a failed row (``success = false``) or a repeatable one (no version) is refused.
"""

from __future__ import annotations

from typing import Final

from service.history.layouts.flyway import version_key
from service.history.migrations import Migration, MigrationSet
from service.history.tooltables.common import exists, refuse, unknown
from service.store.db import Conn

TOOL: Final = "flyway"
TABLE: Final = "flyway_schema_history"
_CREATE: Final = """
DO $flyway$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'flyway_schema_history'
    ) THEN
        CREATE TABLE "flyway_schema_history" (
            "installed_rank" INT NOT NULL,
            "version" VARCHAR(50),
            "description" VARCHAR(200) NOT NULL,
            "type" VARCHAR(20) NOT NULL,
            "script" VARCHAR(1000) NOT NULL,
            "checksum" INTEGER,
            "installed_by" VARCHAR(100) NOT NULL,
            "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
            "execution_time" INTEGER NOT NULL,
            "success" BOOLEAN NOT NULL
        );
        ALTER TABLE "flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
        CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success");
    END IF;
END
$flyway$"""
_INSERT: Final = """
INSERT INTO "flyway_schema_history"
    ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by", "execution_time",
     "success")
SELECT coalesce(max("installed_rank"), 0) + 1, $1, $2, 'SQL', $3, $4, current_user, $5, true
FROM "flyway_schema_history"
"""
_READ: Final = """
SELECT "installed_rank", "version", "type", "script", "checksum", "success"
FROM "flyway_schema_history" ORDER BY "installed_rank"
"""


async def before(conn: Conn, migration: Migration) -> None:
    await conn.execute(_CREATE)


async def after(conn: Conn, migration: Migration, duration_ms: float) -> None:
    origin = migration.origin
    assert origin is not None
    await conn.execute(_INSERT, origin.version, origin.name, migration.file, int(origin.checksum), int(duration_ms))


async def read(conn: Conn, migrations: MigrationSet) -> tuple[Migration, ...] | None:
    if not await exists(conn, TABLE):
        return None
    files = {version_key(m.origin.version): m for m in migrations.migrations if m.origin is not None}
    applied: dict[tuple[int, ...], Migration] = {}
    for row in await conn.fetch(_READ):
        kind, version = row["type"], row["version"]
        if kind in ("SCHEMA", "DELETE") or (kind == "BASELINE" and version is None):
            continue
        if version is None:
            raise refuse(
                TOOL,
                TABLE,
                f"rank {row['installed_rank']} is a repeatable migration ({row['script']}), "
                "which the service does not run",
            )
        key = version_key(version)
        if not row["success"]:
            raise refuse(
                TOOL,
                TABLE,
                f"version {version} failed under Flyway (success = false): repair it first",
                failed_version=version,
            )
        if kind == "BASELINE":
            applied.update((k, m) for k, m in files.items() if k <= key)
            continue
        if key not in files:
            raise unknown(TOOL, TABLE, [version])
        if kind == "UNDO_SQL":
            applied.pop(key, None)
            continue
        migration = files[key]
        assert migration.origin is not None
        if row["checksum"] is not None and str(row["checksum"]) != migration.origin.checksum:
            raise refuse(
                TOOL,
                TABLE,
                f"version {version} ran with checksum {row['checksum']}, but {migration.file} has checksum "
                f"{migration.origin.checksum} (the file was edited after Flyway ran it)",
                modified=[migration.version],
                tool_version=version,
            )
        applied[key] = migration
    return tuple(sorted(applied.values(), key=lambda m: m.version))
