"""Flyway's folder: versioned ``V<version>__<description>.sql`` files, searched in subfolders too.

Read as Flyway's ``ResourceNameParser`` and ``MigrationVersion`` read them: the version is what precedes the first
``__``, ``_`` in it stands for ``.``, its parts compare as integers with trailing zeros dropped (``1.10`` after
``1.9``, ``1.0`` equal to ``1``); the description is the rest with ``_`` as a space; ``script`` is the path
relative to the folder. A script configuration file ``<script>.conf`` with ``executeInTransaction=false`` runs the
file outside a transaction, as Flyway does. ``U`` undo files are ignored (Flyway Teams runs them only on
``undo``); other names are ignored, as Flyway does by default. Refused, with a problem each: repeatable ``R__``
files (Flyway re-runs them whenever their checksum changes, which an ordinal history cannot express), SQL
callbacks, ``${…}`` placeholders (Flyway replaces them from its configuration, which the service does not have),
two files of one version.

The checksum is Flyway's ``ChecksumCalculator``: CRC32 over the UTF-8 bytes of every line without its line ending
(``\\n``, ``\\r`` or ``\\r\\n``, as Java's ``readLine`` splits), a BOM dropped from the first, as a signed int.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Final

from service.history.layouts.common import ToolFile, cut, duplicates, read
from service.history.origin import Origin

_PREFIX: Final = re.compile(r"^V.+__.*\.sql$")
_SPLIT: Final = re.compile(r"\.(?=\d)")
_LINES: Final = re.compile(r"\r\n|\r|\n")
_CALLBACKS: Final = (
    "beforeMigrate",
    "beforeEachMigrate",
    "afterEachMigrate",
    "afterMigrate",
    "afterMigrateApplied",
    "afterVersioned",
    "afterMigrateError",
    "beforeEachMigrateStatement",
    "afterEachMigrateStatement",
    "beforeClean",
    "afterClean",
    "beforeValidate",
    "afterValidate",
    "beforeBaseline",
    "afterBaseline",
    "beforeRepair",
    "afterRepair",
    "beforeInfo",
    "afterInfo",
)


def version_key(version: str) -> tuple[int, ...]:
    """Flyway's ``MigrationVersion`` order. Raises ValueError for a version Flyway would not recognise."""
    parts = [int(p) for p in _SPLIT.split(version.replace("_", "."))]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def checksum(raw: bytes) -> int:
    """Flyway's checksum of a file (see the module docstring)."""
    text = raw.decode("utf-8")
    lines = _LINES.split(text)
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    crc = zlib.crc32("".join(lines).encode("utf-8"))
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def is_versioned(name: str) -> bool:
    return _PREFIX.fullmatch(name) is not None


def load(directory: Path, problems: list[str]) -> list[ToolFile]:
    entries: list[tuple[tuple[int, ...], str, str, Path, str]] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() == ".sql"):
        script = path.relative_to(directory).as_posix()
        if script.startswith("seeds/"):
            continue
        entry = _classify(path.name, script, problems)
        if entry is not None:
            key, version, description = entry
            entries.append((key, version, description, path, script))
    by_key: dict[str, list[str]] = {}
    for key, _, _, _, script in entries:
        by_key.setdefault(".".join(map(str, key)), []).append(script)
    problems.extend(duplicates(by_key))
    files: list[ToolFile] = []
    for _, version, description, path, script in sorted(entries, key=lambda e: e[0]):
        got = read(path, script, problems)
        if got is None:
            continue
        raw, text = got
        if "${" in text:
            problems.append(
                f"{script}: line {text.count(chr(10), 0, text.index('${')) + 1} has a Flyway placeholder (${{…}}); "
                "placeholders are not supported: write the value in the file"
            )
        files.append(
            ToolFile(
                file=script,
                raw=raw,
                text=text,
                statements=cut(text),
                origin=Origin("flyway", version.replace("_", "."), description, str(checksum(raw))),
                transaction=_script_config(path),
                no_transaction_hint="put it in a file of its own, or set executeInTransaction=false in its .conf",
            )
        )
    return files


def _script_config(path: Path) -> bool | None:
    """``executeInTransaction`` from the script's ``<name>.sql.conf`` (Flyway's script configuration), if set."""
    conf = path.with_name(path.name + ".conf")
    if not conf.is_file():
        return None
    for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "executeInTransaction":
            return value.strip().lower() != "false"
    return None


def _classify(name: str, script: str, problems: list[str]) -> tuple[tuple[int, ...], str, str] | None:
    """(order key, version, description) of a versioned file; ``None`` for a file Flyway skips or we refuse."""
    if name.startswith("R__"):
        problems.append(
            f"{script}: Flyway repeatable migrations (R__) are not supported: the service runs each file once, in "
            "version order; make it a versioned V file"
        )
        return None
    if any(name == f"{c}.sql" or name.startswith(f"{c}__") for c in _CALLBACKS):
        problems.append(f"{script}: Flyway SQL callbacks are not supported")
        return None
    if name.startswith("U") or not name.startswith("V") or "__" not in name:
        return None  # undo files run only on `flyway undo`; other names Flyway ignores by default
    stem = name[1 : -len(".sql")]
    version, _, description = stem.partition("__")
    try:
        key = version_key(version)
    except ValueError:
        problems.append(f"{script}: could not recognise version number {version!r} (Flyway: digits and dots)")
        return None
    return key, version, description.replace("_", " ")
