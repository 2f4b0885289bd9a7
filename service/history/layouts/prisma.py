"""Prisma Migrate's folder: ``<timestamp>_<name>/migration.sql`` beside ``migration_lock.toml``.

As ``prisma migrate deploy`` reads it: every subfolder is a migration, in name order, its ``migration.sql`` run as
one script (one implicit transaction, unless a statement cannot run in one: then alone, statement by statement);
its checksum is the sha256 of the script's bytes, as hex. ``migration_lock.toml`` must name the
``postgresql`` provider. Files beside the folders are ignored (``seeds`` is the service's seed folder).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

from service.history.layouts.common import ToolFile, cut, read
from service.history.origin import Origin

LOCK_FILE: Final = "migration_lock.toml"
SCRIPT: Final = "migration.sql"
_PROVIDER: Final = re.compile(r'^\s*provider\s*=\s*"([^"]*)"', re.MULTILINE)


def is_prisma(directory: Path) -> bool:
    if (directory / LOCK_FILE).is_file():
        return True
    return any(p.is_dir() and (p / SCRIPT).is_file() for p in directory.iterdir())


def load(directory: Path, problems: list[str]) -> list[ToolFile]:
    lock = directory / LOCK_FILE
    if lock.is_file():
        provider = _PROVIDER.search(lock.read_text(encoding="utf-8", errors="replace"))
        if provider is None or provider[1] != "postgresql":
            found = "none" if provider is None else repr(provider[1])
            problems.append(f"{LOCK_FILE}: provider is {found}; the service runs PostgreSQL migrations only")
    files: list[ToolFile] = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir() and p.name not in ("seeds", "meta")):
        script = folder / SCRIPT
        label = f"{folder.name}/{SCRIPT}"
        if not script.is_file():
            problems.append(f"{folder.name}: no {SCRIPT} in this migration folder")
            continue
        got = read(script, label, problems)
        if got is None:
            continue
        raw, text = got
        version = folder.name.partition("_")[0]
        files.append(
            ToolFile(
                file=label,
                raw=raw,
                text=text,
                statements=cut(text),
                origin=Origin("prisma", version, folder.name, hashlib.sha256(raw).hexdigest()),
                no_transaction_hint="put it in a migration of its own",
            )
        )
    return files
