"""Each tool's own history table, kept as the tool writes it and read for adoption.

One module per tool (``golang_migrate``, ``flyway``, ``dbmate``, ``goose``, ``prisma``), each with ``before`` and
``after`` (run around a file, inside its transaction when it has one, so that a file reading or altering the
table sees what it would under its tool) and ``read`` (the files the table records as applied; raises
:class:`service.errors.HistoryMismatch` for a history that disagrees with the files). Nothing is written for a
file without an :class:`~service.history.origin.Origin` or with ``keep_table`` off.
"""

from __future__ import annotations

from typing import Final, Protocol

from service.errors import HistoryMismatch
from service.history.migrations import Migration, MigrationSet
from service.history.tooltables import dbmate, flyway, golang_migrate, goose, prisma
from service.store.db import Conn, PostgresError, is_unavailable


class ToolTable(Protocol):
    async def before(self, conn: Conn, migration: Migration) -> None: ...

    async def after(self, conn: Conn, migration: Migration, duration_ms: float) -> None: ...

    async def read(self, conn: Conn, migrations: MigrationSet) -> tuple[Migration, ...] | None: ...


TABLES: Final[dict[str, ToolTable]] = {
    "golang-migrate": golang_migrate,
    "flyway": flyway,
    "dbmate": dbmate,
    "goose": goose,
    "prisma": prisma,
}


def _table(migration: Migration) -> ToolTable | None:
    origin = migration.origin
    return TABLES[origin.tool] if origin is not None and origin.keep_table else None


async def before(conn: Conn, migration: Migration) -> None:
    table = _table(migration)
    if table is not None:
        await table.before(conn, migration)


async def after(conn: Conn, migration: Migration, duration_ms: float) -> None:
    table = _table(migration)
    if table is not None:
        await table.after(conn, migration, duration_ms)


async def read(conn: Conn, migrations: MigrationSet) -> tuple[Migration, ...] | None:
    """The files the layout's tool table records as applied; ``None`` when the layout has none or the database
    lacks it. Raises HistoryMismatch (see the module docstring)."""
    table = TABLES.get(migrations.layout)
    if table is None:
        return None
    try:
        return await table.read(conn, migrations)
    except PostgresError as exc:
        if is_unavailable(exc):
            raise
        # e.g. dbmate's schema_migrations where golang-migrate's is expected: not a history this folder wrote.
        raise HistoryMismatch(
            f"{migrations.layout}'s history table is not as {migrations.layout} writes it: {exc}",
            tool=migrations.layout,
            sqlstate=getattr(exc, "sqlstate", None),
        ) from exc
