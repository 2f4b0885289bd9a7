"""dbmate's folder: ``<version>_<name>.sql`` with ``-- migrate:up`` and ``-- migrate:down`` sections.

As dbmate's ``FindMigrations`` and ``parseMigrationContents``: a file matches ``^(\\d+).*\\.sql$``, its version is
the leading digits, files run in file-name order; only the up section runs, from its directive to
``-- migrate:down``; ``transaction:false`` on the up directive runs it outside a transaction, its row written
after it. Refused, as dbmate refuses them: no up section, no down section, the down before the up, statements
before the up section. A file with several up sections is refused too: dbmate would record its version once per
section, and the second insert fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from service.history.layouts.common import ToolFile, cut, duplicates, read
from service.history.origin import Origin

FILE: Final = re.compile(r"^(\d+).*\.sql$")
UP: Final = re.compile(r"^--\s*migrate:up(\s*$|\s+\S+)", re.MULTILINE)
DOWN: Final = re.compile(r"^--\s*migrate:down(\s*$|\s+\S+)", re.MULTILINE)
_DIRECTIVE: Final = re.compile(r"^--\s*migrate:(up|down)")


def has_sections(text: str) -> bool:
    return UP.search(text) is not None


def load(directory: Path, problems: list[str]) -> list[ToolFile]:
    found: list[tuple[str, Path]] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        match = FILE.fullmatch(path.name)
        if match is not None:
            found.append((match[1], path))
    versions: dict[str, list[str]] = {}
    for version, path in found:
        versions.setdefault(version, []).append(path.name)
    problems.extend(duplicates(versions))
    files: list[ToolFile] = []
    for version, path in found:
        got = read(path, path.name, problems)
        if got is None:
            continue
        raw, text = got
        section = _up_section(path.name, text, problems)
        if section is None:
            continue
        start, end, transaction = section
        name = path.name[len(version) : -len(".sql")].lstrip("_")
        files.append(
            ToolFile(
                file=path.name,
                raw=raw,
                text=text,
                statements=cut(text, start, end),
                origin=Origin("dbmate", version, name),
                transaction=transaction,
                no_transaction_hint="write '-- migrate:up transaction:false'",
            )
        )
    return files


def _up_section(name: str, text: str, problems: list[str]) -> tuple[int, int, bool] | None:
    ups = list(UP.finditer(text))
    downs = list(DOWN.finditer(text))
    problem = None
    if not ups:
        problem = "dbmate requires each migration to define an up block with '-- migrate:up'"
    elif not downs:
        problem = "dbmate requires each migration to define a down block with '-- migrate:down'"
    elif len(ups) > 1 or len(downs) > 1:
        problem = "several '-- migrate:up' sections in one file are not supported"
    elif ups[0].start() > downs[0].start():
        problem = "dbmate requires '-- migrate:up' to appear before '-- migrate:down'"
    elif any(line.strip() and not line.lstrip().startswith("--") for line in text[: ups[0].start()].split("\n")):
        problem = "dbmate does not support statements preceding the '-- migrate:up' block"
    if problem is not None:
        problems.append(f"{name}: {problem}")
        return None
    start, end = ups[0].start(), downs[0].start()
    return start, end, _options(text[start:end]).get("transaction") != "false"


def _options(section: str) -> dict[str, str]:
    """dbmate's ``parseMigrationOptions``: ``key:value`` pairs after the directive on its line."""
    first = _DIRECTIVE.sub("", section.split("\n", 1)[0]).strip()
    options: dict[str, str] = {}
    for pair in first.split():
        parts = pair.split(":")
        if len(parts) == 2:
            options[parts[0]] = parts[1]
    return options
