"""goose's folder: ``<version>_<name>.sql`` files with ``-- +goose Up`` / ``-- +goose Down`` annotations.

As goose's ``NumericComponent`` and ``sqlparser.ParseSQLMigration``: the version is the integer before the first
``_`` (at least 1; other names skipped), files in version order; in the Up part a statement ends on a line whose
last word (before a ``--`` comment) ends with ``;``, or spans ``-- +goose StatementBegin`` … ``StatementEnd``;
comment lines before a statement are dropped; ``-- +goose NO TRANSACTION`` runs the file outside a transaction,
its row written after it. Refused as goose refuses them: no Up annotation, a missing StatementEnd, a statement
without its ``;``, unknown annotations. Refused here: Go migrations and ``ENVSUB ON`` (goose substitutes
environment variables of the machine that runs it, which a service must not).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from service.history.layouts.common import ToolFile, duplicates, read
from service.history.migrations import Statement
from service.history.origin import Origin

FILE: Final = re.compile(r"^(?P<version>[^_]+)_(?P<name>.*)\.(?P<ext>sql|go)$")
_UP: Final = re.compile(r"^--\s*\+goose\s+Up\s*$", re.MULTILINE)
_ANNOTATIONS: Final = ("Up", "Down", "StatementBegin", "StatementEnd", "NO TRANSACTION", "ENVSUB ON", "ENVSUB OFF")


class GooseSyntax(ValueError):
    """A file goose itself would refuse to parse."""


def has_annotations(text: str) -> bool:
    return _UP.search(text) is not None


def load(directory: Path, problems: list[str]) -> list[ToolFile]:
    found: dict[int, list[tuple[Path, str]]] = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        match = FILE.fullmatch(path.name)
        if match is None or not match["version"].isdigit() or int(match["version"]) < 1:
            continue
        if match["ext"] == "go":
            problems.append(f"{path.name}: goose Go migrations cannot run here: only SQL files")
            continue
        found.setdefault(int(match["version"]), []).append((path, match["name"]))
    problems.extend(duplicates({str(v): [p.name for p, _ in e] for v, e in found.items()}))
    files: list[ToolFile] = []
    for version, entries in sorted(found.items()):
        path, name = entries[0]
        got = read(path, path.name, problems)
        if got is None or len(entries) > 1:
            continue
        raw, text = got
        try:
            stmts, use_tx = parse(text)
        except GooseSyntax as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        files.append(
            ToolFile(
                file=path.name,
                raw=raw,
                text=text,
                statements=stmts,
                origin=Origin("goose", str(version), name),
                transaction=use_tx,
                no_transaction_hint="add '-- +goose NO TRANSACTION'",
            )
        )
    return files


def parse(text: str) -> tuple[tuple[Statement, ...], bool]:
    """The Up statements (with the line each starts on) and whether the file runs in a transaction.

    Raises :class:`GooseSyntax` where goose's parser returns an error.
    """
    state = "start"
    use_tx = True
    out: list[Statement] = []
    buf: list[str] = []
    first = 0
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if state == "start" and not line.strip():
            continue
        if line.strip().startswith("--") and "+goose" in line:
            cmd = _annotation(line)
            if cmd == "NO TRANSACTION":
                use_tx = False
                continue
            if cmd == "ENVSUB ON":
                raise GooseSyntax("'-- +goose ENVSUB ON' is not supported: write the values in the file")
            if cmd == "ENVSUB OFF":
                continue
            state = _transition(state, cmd, buf)
            if cmd != "StatementEnd":
                continue
        elif not buf and (line.strip().startswith("--") or line == ""):
            continue
        if state in ("down", "begin_down", "end_down"):
            buf = []  # the Down part is never run
            continue
        if state == "start":
            raise GooseSyntax(f"line {number}: must start with '-- +goose Up' annotation")
        if state != "end_up":
            if not buf:
                first = number
            buf.append(line)
        if (state == "up" and _ends_with_semicolon(line)) or state == "end_up":
            out.append(Statement(number=len(out) + 1, line=first, sql="\n".join(buf).strip()))
            buf = []
            state = "up"
    if state == "start":
        raise GooseSyntax("must start with '-- +goose Up' annotation")
    if state in ("begin_up", "begin_down"):
        raise GooseSyntax("missing '-- +goose StatementEnd' annotation")
    if "\n".join(buf).strip():
        raise GooseSyntax(f"line {first}: statement does not end with a semicolon")
    return tuple(out), use_tx


def _transition(state: str, cmd: str, buf: list[str]) -> str:
    if cmd == "Up":
        if state != "start":
            raise GooseSyntax("duplicate '-- +goose Up' annotations")
        return "up"
    if cmd == "Down":
        if state not in ("up", "end_up"):
            raise GooseSyntax("must start with '-- +goose Up' annotation")
        if "\n".join(buf).strip():
            raise GooseSyntax("statement does not end with a semicolon before '-- +goose Down'")
        return "down"
    if cmd == "StatementBegin":
        if state in ("up", "end_up"):
            return "begin_up"
        if state in ("down", "end_down"):
            return "begin_down"
        raise GooseSyntax("'-- +goose StatementBegin' must be defined after '-- +goose Up' or '-- +goose Down'")
    if state == "begin_up":
        return "end_up"
    if state == "begin_down":
        return "end_down"
    raise GooseSyntax("'-- +goose StatementEnd' must be defined after '-- +goose StatementBegin'")


def _annotation(line: str) -> str:
    if line.startswith((" ", "\t")):
        raise GooseSyntax(f"{line!r} contains leading whitespace")
    cmd = line.replace("--", "").replace("+goose", "", 1).strip()
    if cmd not in _ANNOTATIONS:
        raise GooseSyntax(f"unknown annotation: {cmd!r}")
    return cmd


def _ends_with_semicolon(line: str) -> bool:
    prev = ""
    for word in line.split():
        if word.startswith("--"):
            break
        prev = word
    return prev.endswith(";")
