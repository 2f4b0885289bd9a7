"""Folder layouts: which tool wrote a migrations folder, and one loader per tool.

``NNNN_name.sql`` and Drizzle Kit folders are read by :mod:`service.history.migrations`; golang-migrate, Flyway,
dbmate, goose and Prisma folders by the module of that name here, each reading file names and syntax as its tool
does (see each module's docstring). Every loader gives the files in the tool's order; the service numbers them
0, 1, 2, … (its ordinal version) and keeps the tool's own version and name in :attr:`Migration.origin`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final, Literal, get_args

from service.errors import MigrationSetInvalid
from service.history import migrations
from service.history.layouts import common, dbmate, flyway, golang_migrate, goose, prisma
from service.history.migrations import MigrationSet

Layout = Literal["auto", "nnnn", "drizzle", "golang-migrate", "flyway", "dbmate", "goose", "prisma"]
LAYOUTS: Final = get_args(Layout)
_LOADERS: Final[dict[str, Callable[[Path, list[str]], list[common.ToolFile]]]] = {
    "golang-migrate": golang_migrate.load,
    "flyway": flyway.load,
    "dbmate": dbmate.load,
    "goose": goose.load,
    "prisma": prisma.load,
}


def detect(directory: Path) -> str:
    """The layout of a folder, from what is in it: a Drizzle journal, Prisma's lock file or migration folders,
    golang-migrate's ``.up.sql`` names, Flyway's ``V…__`` names, then goose's or dbmate's annotations; else
    ``nnnn``."""
    if (directory / "meta" / "_journal.json").is_file():
        return "drizzle"
    if prisma.is_prisma(directory):
        return "prisma"
    names = [p.name for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".sql"]
    if any(golang_migrate.is_up(n) for n in names):
        return "golang-migrate"
    if any(flyway.is_versioned(n) for n in names):
        return "flyway"
    for name in sorted(names):
        text = (directory / name).read_text(encoding="utf-8", errors="replace")
        if goose.has_annotations(text):
            return "goose"
        if dbmate.has_sections(text):
            return "dbmate"
    return "nnnn"


def load(
    directory: Path,
    seeds_directory: Path | None = None,
    *,
    layout: Layout = "auto",
    journal: Literal["strict", "ignore"] = "strict",
    tool_table: bool = True,
) -> MigrationSet:
    """Load a migrations folder of any layout (``auto``: :func:`detect`).

    Raises :class:`MigrationSetInvalid` listing every problem, as :func:`service.history.migrations.load` does.
    """
    if not directory.is_dir():
        raise MigrationSetInvalid([f"{directory}: migrations folder not found"])
    chosen = detect(directory) if layout == "auto" else layout
    if chosen in ("nnnn", "drizzle"):
        loaded = migrations.load(directory, seeds_directory, journal=journal)
        if tool_table:
            return loaded
        return replace(loaded, migrations=tuple(replace(m, drizzle_when=None) for m in loaded.migrations))
    problems: list[str] = []
    files = _LOADERS[chosen](directory, problems)
    built = common.build(files, problems)
    if not built and not problems:
        problems.append(f"{directory}: no {chosen} migration files")
    seeds = migrations.load_seeds(seeds_directory if seeds_directory is not None else directory / "seeds", problems)
    if problems:
        raise MigrationSetInvalid([f"({chosen} layout) {p}" for p in problems])
    return MigrationSet(migrations=built if tool_table else common.without_table(built), seeds=seeds, layout=chosen)
