"""What the tool history tables share: where a table is, and the one way a recorded history is refused."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.errors import HistoryMismatch
from service.history.migrations import Migration, MigrationSet
from service.store.db import Conn


async def exists(conn: Conn, table: str) -> bool:
    """Whether ``table`` exists in the connection's current schema (where every one of these tools keeps it)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1)", table
        )
    )


def by_tool_version(migrations: MigrationSet) -> dict[str, Migration]:
    return {m.origin.version: m for m in migrations.migrations if m.origin is not None}


def refuse(tool: str, table: str, problem: str, **details: Any) -> HistoryMismatch:
    return HistoryMismatch(f"{tool}'s {table}: {problem}", tool=tool, table=table, **details)


def unknown(tool: str, table: str, versions: Iterable[str]) -> HistoryMismatch:
    listed = sorted(set(versions))
    return refuse(
        tool,
        table,
        f"records version(s) {', '.join(listed)} that match no migration file (another history, or files removed)",
        unknown_versions=listed,
    )
