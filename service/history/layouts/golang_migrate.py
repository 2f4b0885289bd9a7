"""golang-migrate's folder: ``<version>_<name>.up.sql`` (``.down.sql`` ignored).

As golang-migrate's ``source.Parse``: ``^([0-9]+)_(.*)\\.(down|up)\\.(.*)$``, the version an unsigned integer, files
in numeric version order, a name that does not match skipped, two up files of one version refused. Its postgres
driver sends a file as one query, so a file runs as written: in one (implicit) transaction unless a statement
cannot, in which case the service runs it alone, statement by statement, as PostgreSQL then requires.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from service.history.layouts.common import ToolFile, cut, duplicates, read
from service.history.origin import Origin

PATTERN: Final = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)$")


def is_up(name: str) -> bool:
    match = PATTERN.fullmatch(name)
    return match is not None and match[3] == "up"


def load(directory: Path, problems: list[str]) -> list[ToolFile]:
    found: dict[int, list[tuple[Path, str]]] = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        match = PATTERN.fullmatch(path.name)
        if match is None or match[3] != "up" or match[4].lower() != "sql":
            continue
        found.setdefault(int(match[1]), []).append((path, match[2]))
    problems.extend(duplicates({str(v): [p.name for p, _ in e] for v, e in found.items()}))
    files: list[ToolFile] = []
    for version, entries in sorted(found.items()):
        path, name = entries[0]
        got = read(path, path.name, problems)
        if got is None or len(entries) > 1:
            continue
        raw, text = got
        files.append(
            ToolFile(
                file=path.name,
                raw=raw,
                text=text,
                statements=cut(text),
                origin=Origin("golang-migrate", str(version), name),
                no_transaction_hint="put it in a file of its own",
            )
        )
    return files
