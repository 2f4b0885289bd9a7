"""Drizzle Kit's ``meta/_journal.json``: its entries, and what about it would make drizzle behave unlike us.

drizzle-kit reads the *journal*, not the folder: it runs the entries in journal order, fails on an entry without
its file, never runs a file without an entry, and ``drizzle-kit migrate`` skips every entry whose ``when`` is not
later than the newest one the database already has. Every journal drizzle-kit has written is read: dialect
``"pg"`` (drizzle-kit before 0.21, journal versions 5 and 6) or ``"postgresql"`` (version 7), entries with or
without their own ``version`` and ``breakpoints`` (drizzle splits on breakpoints whatever the flag says).
``idx`` is drizzle-kit's counter for the next file's number; drizzle never reads it, and neither do we.

Each problem names the file or entry it is about, and every problem is reported, not only the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

JOURNAL: Final = "meta/_journal.json"
# "pg" is what drizzle-kit wrote before it renamed the dialect (0.21).
DIALECTS: Final = ("postgresql", "pg")


@dataclass(frozen=True, slots=True)
class Entry:
    idx: int | None
    when: int
    tag: str
    breakpoints: bool = True

    @property
    def file(self) -> str:
        return f"{self.tag}.sql"


@dataclass(frozen=True, slots=True)
class Journal:
    entries: tuple[Entry, ...]

    def when(self, file: str) -> int | None:
        """The entry's timestamp (ms): drizzle stores it as ``created_at`` of the row it writes."""
        return next((e.when for e in self.entries if e.file == file), None)


def read(directory: Path) -> tuple[Journal | None, list[str]]:
    """The folder's journal (``None`` when it has none) and what is wrong with its shape."""
    path = directory / JOURNAL
    if not path.is_file():
        return None, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, [f"{JOURNAL}: not valid JSON ({exc})"]
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return None, [f'{JOURNAL}: expected an object with an "entries" list']
    problems: list[str] = []
    dialect = data.get("dialect")
    if dialect is not None and dialect not in DIALECTS:
        problems.append(f'{JOURNAL}: dialect is "{dialect}", expected "postgresql" (or "pg", its older name)')
    entries: list[Entry] = []
    for position, raw in enumerate(data["entries"]):
        entry = _entry(raw)
        if entry is None:
            problems.append(f"{JOURNAL}: entry #{position} needs an integer when and a string tag")
        else:
            entries.append(entry)
    return Journal(tuple(entries)), problems


def _entry(raw: Any) -> Entry | None:
    if not isinstance(raw, dict):
        return None
    idx, when, tag = raw.get("idx"), raw.get("when"), raw.get("tag")
    # bool is an int subclass: true/false in the JSON are not numbers.
    if not isinstance(when, int) or isinstance(when, bool):
        return None
    if not isinstance(idx, int) or isinstance(idx, bool):
        idx = None
    if not isinstance(tag, str) or not tag:
        return None
    return Entry(idx=idx, when=when, tag=tag, breakpoints=raw.get("breakpoints") is not False)


def check(journal: Journal, files: Iterable[str]) -> list[str]:
    """What would make drizzle fail or skip a file; ``[]`` when it runs every entry, in journal order.

    Every entry needs its file and a tag of its own, and ``when`` must increase along the journal.
    """
    present = set(files)
    problems: list[str] = []
    seen: set[str] = set()
    for entry in journal.entries:
        if entry.tag in seen:
            problems.append(f"{JOURNAL}: {entry.tag} is listed more than once")
        seen.add(entry.tag)
        if entry.file not in present:
            problems.append(f"{JOURNAL} lists {entry.tag} but {entry.file} does not exist")
    problems.extend(_not_increasing([e for e in journal.entries if e.file in present], "when", _when_text))
    return problems


def orphans(journal: Journal, files: Iterable[str]) -> list[str]:
    """Warnings naming the ``.sql`` files the journal does not list: drizzle never runs them, nor do we."""
    listed = {e.file for e in journal.entries}
    return [
        f"{name} is not in {JOURNAL}: it is never run (drizzle-kit runs only the journal's entries)"
        for name in sorted(set(files) - listed)
    ]


def problems(directory: Path, files: Iterable[str]) -> list[str]:
    """Everything wrong with the folder's journal; ``[]`` when it is sound or there is none."""
    journal, found = read(directory)
    if journal is None:
        return found
    return found + check(journal, files)


def _not_increasing(ordered: Sequence[Entry], field: str, show: Any) -> list[str]:
    """Entries whose value is not above every earlier entry's: drizzle compares with the newest seen."""
    out: list[str] = []
    top: Entry | None = None
    for entry in ordered:
        value = getattr(entry, field)
        if top is not None and value <= getattr(top, field):
            hint = "; drizzle-kit migrate would skip it" if field == "when" else ""
            out.append(
                f"{entry.file}: journal {field} {show(value)} is not after {top.file}'s {show(getattr(top, field))}"
                + hint
            )
        else:
            top = entry
    return out


def _when_text(millis: int) -> str:
    try:
        stamp = datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(millis)
    return f"{millis} ({stamp})"
