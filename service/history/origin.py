"""Where a migration file came from when a tool other than this service wrote its folder.

Kept apart from :mod:`service.history.migrations` so that the layout loaders (``history/layouts``) and the tool
history tables (``history/tooltables``) share one small value without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Tool = Literal["golang-migrate", "flyway", "dbmate", "goose", "prisma"]
TOOLS: Final[tuple[Tool, ...]] = ("golang-migrate", "flyway", "dbmate", "goose", "prisma")


@dataclass(frozen=True, slots=True)
class Origin:
    """A file's identity in its tool: the tool's version string (``"20240101120000"``, ``"1.10"``), its
    name or description as the tool records it, and the checksum the tool keeps, if any (Flyway's signed CRC32 as
    decimal text, Prisma's sha256 hex). ``keep_table`` says whether the tool's own history table is written."""

    tool: Tool
    version: str
    name: str
    checksum: str = ""
    keep_table: bool = True


def digest_part(origin: Origin | None) -> str:
    """What a file's origin adds to a digest of the schema it builds (expected schemas, templates): the tool and
    whether its table is written. Empty for NNNN and Drizzle files, so their digests stay as they were."""
    return "" if origin is None else f" {origin.tool} tool-table={origin.keep_table}"
