"""Write a new migration into a folder the way its tools would: ``tenantctl new`` and ``check --fix-journal``.

The next ``NNNN_name.sql`` file; in a Drizzle folder (one with ``meta/_journal.json``) also its journal entry
exactly as ``drizzle-kit generate --custom`` appends it (``idx``, ``version``, ``when`` in milliseconds, ``tag``,
``breakpoints``, the file rewritten as ``JSON.stringify(journal, null, 2)``) and, when the folder keeps drizzle's
snapshots, the copy of the latest one drizzle-kit writes beside it; and, when the folder has a ``tenants.sum``, the
new file's line in it. So ``tenantctl check`` is green right after, and ``drizzle-kit migrate`` applies the file.

``when`` is the current time, but always later than the newest entry's: drizzle-kit applies only entries newer
than the last one a database ran, so an entry that is not later would be skipped.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from service.errors import InvalidRequest, MigrationSetInvalid
from service.history import checks, journal, layouts, migrations, nnnn

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# drizzle-kit's snapshot version for PostgreSQL, used when the journal names none.
_DRIZZLE_VERSION: Final = "7"
# Never drizzle's breakpoint marker in it: the file is split on that text, comments or not.
_PLACEHOLDER: Final = "-- {tag}: write the migration's SQL here, then run `tenantctl check --write-sum` to pin it.\n"


@dataclass(frozen=True, slots=True)
class Created:
    file: Path
    journal_entry: dict[str, Any] | None
    snapshot: Path | None
    pinned: bool


def new(directory: Path, name: str, *, sql: str | None = None, transactional: bool = True) -> Created:
    """Write the next migration file holding ``sql`` (a commented placeholder, not pinned, when ``None``).

    Raises :class:`InvalidRequest` for a bad name or a folder without a place for the file, and
    :class:`MigrationSetInvalid` for a folder whose file names cannot tell the next version.
    """
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"bad migration name {name!r}: letters, digits, _ and -, starting with a letter or digit")
    if not directory.is_dir():
        raise InvalidRequest(f"{directory}: migrations folder not found")
    layout = layouts.detect(directory)
    if layout not in ("nnnn", "drizzle"):
        raise InvalidRequest(f"{directory} is a {layout} folder: write its next file with {layout} itself")
    version, width = _next_version(directory)
    tag = f"{version:0{width}d}_{name}"
    body = sql if sql is not None and sql.strip() else _PLACEHOLDER.format(tag=tag)
    if not transactional:
        body = f"{migrations.NO_TRANSACTION_MARKER}\n{body}"
    path = directory / f"{tag}.sql"
    path.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
    entry, snapshot = None, None
    if (directory / journal.JOURNAL).is_file():
        entry, snapshot = _append_entry(directory, tag, version)
    pinned = sql is not None and bool(sql.strip()) and _pin(directory, path)
    return Created(path, entry, snapshot, pinned)


def fix_journal(directory: Path) -> list[str]:
    """Append journal entries for the files after the newest journaled one that lack one; return their tags.

    A file without an entry *below* a journaled one cannot be fixed this way (drizzle-kit would skip it on every
    database that ran the later one); it stays reported by ``check``. Raises :class:`InvalidRequest` when the
    folder has no journal or one that cannot be read.
    """
    data = _read_journal(directory)
    listed = {e.get("tag") for e in data["entries"] if isinstance(e, dict)}
    versions = [_version_of(e.get("tag")) for e in data["entries"] if isinstance(e, dict)]
    top = max((v for v in versions if v is not None), default=-1)
    added: list[str] = []
    for path in sorted(directory.glob("*.sql"), key=lambda p: (_version_of(p.stem) or -1, p.name)):
        number = _version_of(path.stem)
        if number is None or path.stem in listed or number <= top:
            continue
        _append_entry(directory, path.stem, number, snapshot=False)
        added.append(path.stem)
    return added


def _next_version(directory: Path) -> tuple[int, int]:
    found = [m for p in directory.glob("*.sql") if (m := nnnn.FILE_PATTERN.fullmatch(p.name)) is not None]
    if not found:
        return 0, 4
    versions = [int(m["version"]) for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationSetInvalid(["two files share a version: run `tenantctl check` and fix the folder first"])
    return max(versions) + 1, max(4, *(len(m["version"]) for m in found))


def _version_of(tag: object) -> int | None:
    match = nnnn.FILE_PATTERN.fullmatch(f"{tag}.sql") if isinstance(tag, str) else None
    return int(match["version"]) if match else None


def _read_journal(directory: Path) -> dict[str, Any]:
    path = directory / journal.JOURNAL
    if not path.is_file():
        raise InvalidRequest(f"{directory}: no {journal.JOURNAL}; nothing to fix")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"{path}: not valid JSON ({exc}); fix it by hand") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise InvalidRequest(f'{path}: expected an object with an "entries" list; fix it by hand')
    return data


def _append_entry(
    directory: Path, tag: str, version: int, *, snapshot: bool = True
) -> tuple[dict[str, Any], Path | None]:
    """Append as drizzle-kit does; the file keeps its trailing newline, if it had one."""
    path = directory / journal.JOURNAL
    raw = path.read_text(encoding="utf-8")
    data = _read_journal(directory)
    entries = [e for e in data["entries"] if isinstance(e, dict)]
    last = entries[-1] if entries else {}
    last_idx, last_when = last.get("idx"), last.get("when")
    entry = {
        "idx": last_idx + 1 if isinstance(last_idx, int) else 0,
        "version": str(last.get("version") or data.get("version") or _DRIZZLE_VERSION),
        "when": max(int(time.time() * 1000), last_when + 1 if isinstance(last_when, int) else 0),
        "tag": tag,
        "breakpoints": True,
    }
    data["entries"].append(entry)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    path.write_text(text + "\n" if raw.endswith("\n") else text, encoding="utf-8")
    return entry, _copy_snapshot(directory, version) if snapshot else None


def _copy_snapshot(directory: Path, version: int) -> Path | None:
    """drizzle-kit's ``--custom`` snapshot: the latest one under a new id, pointing back at it."""
    meta = directory / "meta"
    snapshots = sorted(meta.glob("*_snapshot.json"))
    if not snapshots:
        return None
    previous = json.loads(snapshots[-1].read_text(encoding="utf-8"))
    rest = {k: v for k, v in previous.items() if k not in ("id", "prevId")}
    copy = {"id": str(uuid.uuid4()), "prevId": previous.get("id"), **rest}
    copy["_meta"] = {"columns": {}, "schemas": {}, "tables": {}}
    target = meta / f"{version:04d}_snapshot.json"
    target.write_text(json.dumps(copy, indent=2, ensure_ascii=False), encoding="utf-8")
    return target


def _pin(directory: Path, path: Path) -> bool:
    """Add the file's line to an existing, intact sum (a sum edited by hand is left for ``check`` to report)."""
    pinned = checks.read_sum(directory)
    if pinned is None or pinned.problems:
        return False
    files = {**pinned.files, path.name: checks.file_sha256(path)}
    (directory / checks.SUM_FILE).write_bytes(checks.render_sum(files).encode())
    return True
