"""The ``NNNN_name.sql`` layout: every ``.sql`` file of the folder runs, in the order of its number.

Versions are the numbers in the file names, contiguous from ``0000``: a gap or a number used twice means a file
was lost or two branches collided, and is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from service.history.migrations import Migration, build

FILE_PATTERN: Final = re.compile(r"^(?P<version>\d{4,})_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)\.sql$")


def sql_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".sql")


def load_files(directory: Path, problems: list[str]) -> list[Migration]:
    """The folder's migrations in version order; every problem is added to ``problems``."""
    found: dict[int, list[tuple[Path, str]]] = {}
    for path in sql_files(directory):
        match = FILE_PATTERN.fullmatch(path.name)
        if match is None:
            problems.append(f"{path.name}: bad file name (expected NNNN_name.sql)")
            continue
        found.setdefault(int(match["version"]), []).append((path, match["name"]))
    for version, entries in sorted(found.items()):
        if len(entries) > 1:
            names = ", ".join(p.name for p, _ in entries)
            problems.append(f"version {version} is used by more than one file: {names}")
    problems.extend(_gaps(found))
    if not found and not problems:
        problems.append(f"{directory}: no migration files")
    return [
        m
        for version, entries in sorted(found.items())
        if len(entries) == 1 and (m := build(entries[0][0], version, entries[0][1], problems)) is not None
    ]


def _gaps(found: dict[int, list[tuple[Path, str]]]) -> Iterable[str]:
    if not found:
        return []
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if not missing:
        return []
    return [f"missing version(s) {', '.join(f'{v:04d}' for v in missing)}: versions must be contiguous from 0000"]
