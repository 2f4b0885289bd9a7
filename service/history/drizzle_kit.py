"""The Drizzle Kit layout: ``meta/_journal.json`` is the truth, as drizzle-orm's migrator reads it.

drizzle runs the journal's entries in journal order, the file ``<tag>.sql`` of each, and nothing else: a file the
journal does not list (an abandoned draft beside its replacement, a backfill script) is never run, so here it is
a warning naming it, not a problem; the numbers in the file names mean nothing to drizzle, so a missing one does
not matter either. The service's version of a file is its position in the journal (0, 1, 2, ...); its name is the
tag without a leading number (``0003_add_notes`` → ``add_notes``), the whole tag when there is none.

Kept as problems, because they protect the user (:mod:`service.history.journal`): an entry without its file (drizzle
fails on it), a tag listed twice, and a ``when`` not after the entries before it (drizzle-kit would skip that file
on every database already past it). An edited file is caught per tenant, by its hash.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from service.history import journal
from service.history.migrations import Migration, build

if TYPE_CHECKING:
    from service.history.migrations import Findings

_NUMBERED: Final = re.compile(r"^\d+_(?P<name>.+)$")


def is_drizzle(directory: Path) -> bool:
    return (directory / journal.JOURNAL).is_file()


def name_of(tag: str) -> str:
    match = _NUMBERED.fullmatch(tag)
    return match["name"] if match else tag


def load_files(directory: Path, found: Findings) -> list[Migration]:
    """The journal's files in journal order; problems, journal problems and warnings are added to ``found``."""
    read, shape = journal.read(directory)
    found.journal.extend(shape)
    if read is None:
        return []
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".sql")
    found.journal.extend(journal.check(read, names))
    found.warnings.extend(journal.orphans(read, names))
    if not read.entries and not shape:
        found.journal.append(f"{journal.JOURNAL}: no entries")
    present = set(names)
    loaded: list[Migration] = []
    for version, entry in enumerate(read.entries):
        if entry.file not in present:
            continue  # named by journal.check
        migration = build(directory / entry.file, version, name_of(entry.tag), found.problems, drizzle_when=entry.when)
        if migration is not None:
            loaded.append(migration)
    return loaded
