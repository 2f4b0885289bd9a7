"""Drizzle Kit's ``meta/_journal.json``, checked against the ``.sql`` files beside it (pure, standard library only).

drizzle-kit reads the *journal*, not the folder: a file without an entry is never applied by it, an entry without
a file makes it fail, and ``drizzle-kit migrate`` skips every entry whose ``when`` is not later than the newest
one the database already has. A folder whose journal disagrees with its files therefore means something different
to drizzle than to this service, so by default the service refuses to start on it (``TENANTS_JOURNAL=strict``).

Each problem names the file or entry it is about, and every problem is reported, not only the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

JOURNAL: Final = "meta/_journal.json"
_VERSION: Final = re.compile(r"^(\d+)_")


@dataclass(frozen=True, slots=True)
class Entry:
    idx: int
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
    if dialect is not None and dialect != "postgresql":
        problems.append(f'{JOURNAL}: dialect is "{dialect}", expected "postgresql"')
    entries: list[Entry] = []
    for position, raw in enumerate(data["entries"]):
        entry = _entry(raw)
        if entry is None:
            problems.append(f"{JOURNAL}: entry #{position} needs an integer idx and when and a string tag")
        else:
            entries.append(entry)
    return Journal(tuple(entries)), problems


def _entry(raw: Any) -> Entry | None:
    if not isinstance(raw, dict):
        return None
    idx, when, tag = raw.get("idx"), raw.get("when"), raw.get("tag")
    # bool is an int subclass: true/false in the JSON are not numbers.
    if not isinstance(idx, int) or not isinstance(when, int) or isinstance(idx, bool) or isinstance(when, bool):
        return None
    if not isinstance(tag, str) or not tag:
        return None
    return Entry(idx=idx, when=when, tag=tag, breakpoints=raw.get("breakpoints") is not False)


def check(journal: Journal, files: Iterable[str]) -> list[str]:
    """Compare the journal with the migration file names; ``[]`` when drizzle would see what we see.

    Every file needs an entry and every entry its file; ``idx`` and ``when`` must increase with the version.
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
    listed = {e.file for e in journal.entries}
    problems.extend(f"{name} is not in {JOURNAL}" for name in sorted(present - listed))
    ordered = sorted((e for e in journal.entries if e.file in present), key=_version)
    problems.extend(_not_increasing(ordered, "idx", str))
    problems.extend(_not_increasing(ordered, "when", _when_text))
    return problems


def problems(directory: Path, files: Iterable[str]) -> list[str]:
    """Everything wrong with the folder's journal; ``[]`` when it is sound or there is none."""
    journal, found = read(directory)
    if journal is None:
        return found
    return found + check(journal, files)


def _version(entry: Entry) -> tuple[int, str]:
    match = _VERSION.match(entry.tag)
    return (int(match[1]) if match else -1, entry.tag)


def _not_increasing(ordered: Sequence[Entry], field: str, show: Any) -> list[str]:
    """Entries whose value is not above every earlier version's: drizzle compares with the newest seen."""
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
