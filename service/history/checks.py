"""``tenantctl check``: is a migrations folder fit to ship? No server needed; meant for pre-commit and CI.

It reports, all at once: what would stop the service from loading the folder (names, gaps, duplicates, empty or
non-UTF-8 files, statements that cannot run in a transaction), statements PostgreSQL cannot parse (file, line and
column, pinned or not: :mod:`service.history.syntax`), a Drizzle journal that disagrees with the files,
files that changed or appeared since ``tenants.sum`` was written, and with ``lint`` the heavy-lock statements of
new files (:mod:`service.lint`). The running service never reads the sum file: it compares each tenant's own
history instead; the sum catches an edit before it ever reaches a tenant.

The sum file ``<folder>/tenants.sum`` (after Atlas's ``atlas.sum``) pins every migration file, one line each, in
name order, after a header line that pins the lines themselves::

    h1:<sha256 of every byte after the header line>
    0000_initial_schema.sql h1:<sha256 of the file>
    0001_add_client_notes_tags.sql h1:<sha256 of the file>

Hashes are hex sha256 as the service computes them (BOM dropped, CRLF read as LF), so they equal the ``sha256``
of ``GET /migrations`` and of the tenants' history, and a checkout's line endings never change them. Lines end in
``\\n``. Only the top-level ``.sql`` files are pinned: seeds run once per new tenant and may change for later ones,
and the journal is checked against the files on its own. A folder without a sum file is valid; nothing is pinned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from service.errors import MigrationSetInvalid
from service.history import journal, layouts, lint, migrations, nnnn, syntax

SUM_FILE: Final = "tenants.sum"
_PREFIX: Final = "h1:"
_WRITE: Final = "`tenantctl check --write-sum`"

Kind = Literal["files", "syntax", "journal", "sum", "lint"]
SumState = Literal["ok", "absent", "mismatch", "written"]
JournalState = Literal["ok", "absent", "problems"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    message: str
    file: str | None = None
    line: int | None = None
    rule: str | None = None
    column: int | None = None


@dataclass(frozen=True, slots=True)
class Report:
    directory: Path
    files: int
    journal: JournalState
    sum: SumState
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...] = ()
    linted: tuple[str, ...] = ()

    def exit_code(self, *, lint: bool) -> int:
        """1 on any error, and with ``lint`` on any lint finding; else 0 (files a journal leaves out only warn)."""
        return 1 if self.errors or (lint and any(w.kind == "lint" for w in self.warnings)) else 0


def check(directory: Path, *, lint_new: bool = False) -> Report:
    """Check the folder; with ``lint_new`` also lint the files the sum does not pin yet (every file without one).

    Raises :class:`FileNotFoundError` for a missing folder and :class:`service.errors.LintUnavailable` when
    linting is asked for and squawk cannot run.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: migrations folder not found")
    names = _sql_files(directory)
    drizzle = (directory / journal.JOURNAL).is_file()
    errors, notes = _file_problems(directory)
    errors += _syntax_problems(directory, names)
    if drizzle:
        errors += _bom_problems(directory, names)
    journal_state: JournalState = "ok" if drizzle else "absent"
    if any(f.kind == "journal" for f in errors):
        journal_state = "problems"
    pinned = read_sum(directory)
    hashes = {name: file_sha256(directory / name) for name in names}
    sum_errors = [] if pinned is None else _sum_problems(pinned, hashes)
    sum_state: SumState = "absent" if pinned is None else ("mismatch" if sum_errors else "ok")
    new = [n for n in names if pinned is None or n not in pinned.files]
    warnings = notes + (_lint(directory, new) if lint_new else [])
    return Report(
        directory=directory,
        files=len(names),
        journal=journal_state,
        sum=sum_state,
        errors=tuple(errors + sum_errors),
        warnings=tuple(warnings),
        linted=tuple(new) if lint_new else (),
    )


def write_sum(directory: Path, *, lint_new: bool = False) -> Report:
    """Check the folder, then (only when nothing but the sum is wrong) write its sum file.

    Lint findings, asked for with ``lint_new``, are about the files the old sum did not pin, and do not stop the
    write: the caller decides by the exit code.
    """
    report = check(directory, lint_new=lint_new)
    blocking = tuple(f for f in report.errors if f.kind != "sum")
    if blocking:
        return Report(report.directory, report.files, report.journal, report.sum, blocking, report.warnings)
    names = _sql_files(directory)
    (directory / SUM_FILE).write_bytes(render_sum({n: file_sha256(directory / n) for n in names}).encode())
    return Report(report.directory, report.files, report.journal, "written", (), report.warnings, report.linted)


# -- output -------------------------------------------------------------------------------------------------

_JOURNAL_TEXT: Final = {"ok": "ok", "absent": "absent", "problems": "disagrees with the files"}
_SUM_TEXT: Final = {
    "ok": "ok",
    "absent": f"absent (nothing pinned; {_WRITE} pins the files)",
    "mismatch": "does not match the files",
    "written": "written",
}


def human(report: Report) -> str:
    """The report for people: a summary line, one line per finding, a verdict."""
    lines = [
        f"{report.directory}: {report.files} migration file(s); journal {_JOURNAL_TEXT[report.journal]}; "
        f"{SUM_FILE} {_SUM_TEXT[report.sum]}"
    ]
    lines += [f"error: {f.message}" for f in report.errors]
    lines += [f"warning: {_where(f)}{f.message}" for f in report.warnings]
    if report.linted:
        lines.append(f"linted {len(report.linted)} new file(s): {', '.join(report.linted)}")
    counts = f"{len(report.errors)} problem(s), {len(report.warnings)} warning(s)"
    lines.append(counts if report.errors or report.warnings else "ok")
    return "\n".join(lines)


def _where(finding: Finding) -> str:
    if finding.file is None or finding.message.startswith(finding.file):
        return ""
    return f"{finding.file}:{finding.line}: " if finding.line is not None else f"{finding.file}: "


def as_dict(report: Report) -> dict[str, object]:
    """The report for tools (``--json``)."""

    def finding(f: Finding) -> dict[str, object]:
        return {
            "kind": f.kind,
            "file": f.file,
            "line": f.line,
            "column": f.column,
            "rule": f.rule,
            "message": f.message,
        }

    return {
        "directory": str(report.directory),
        "ok": not report.errors,
        "files": report.files,
        "journal": report.journal,
        "sum": report.sum,
        "errors": [finding(f) for f in report.errors],
        "warnings": [finding(f) for f in report.warnings],
        "linted": list(report.linted),
    }


# -- the sum file -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SumFile:
    files: dict[str, str]
    problems: tuple[str, ...] = ()


def file_sha256(path: Path) -> str:
    """The service's hash of a file; a file that is not UTF-8 (reported elsewhere) is hashed as bytes."""
    raw = path.read_bytes()
    try:
        return migrations.sha256_text(migrations.normalise(raw))
    except UnicodeDecodeError:
        return hashlib.sha256(raw).hexdigest()


def render_sum(hashes: dict[str, str]) -> str:
    body = "".join(f"{name} {_PREFIX}{hashes[name]}\n" for name in sorted(hashes))
    return f"{_PREFIX}{hashlib.sha256(body.encode()).hexdigest()}\n{body}"


def read_sum(directory: Path) -> SumFile | None:
    """The sum file's pins and what is wrong with the file itself; ``None`` when there is none."""
    path = directory / SUM_FILE
    if not path.is_file():
        return None
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    header, _, body = text.partition("\n")
    problems: list[str] = []
    if header != _PREFIX + hashlib.sha256(body.encode()).hexdigest():
        problems.append(
            f"{SUM_FILE}: its first line does not match the lines below it (edited by hand, or a merge); "
            f"review them and run {_WRITE}"
        )
    files: dict[str, str] = {}
    for number, line in enumerate(body.splitlines(), start=2):
        name, sep, digest = line.rpartition(f" {_PREFIX}")
        if not sep or not name or len(digest) != 64:
            problems.append(f"{SUM_FILE} line {number}: expected '<file> {_PREFIX}<sha256>'")
            continue
        files[name] = digest
    return SumFile(files=files, problems=tuple(problems))


def _sum_problems(pinned: SumFile, hashes: dict[str, str]) -> list[Finding]:
    out = [Finding("sum", p, SUM_FILE) for p in pinned.problems]
    for name in sorted(set(pinned.files) | set(hashes)):
        if name not in hashes:
            message = (
                f"{name} is in {SUM_FILE} but missing: restore it (a released migration is never deleted), "
                f"or run {_WRITE} if it was never released"
            )
        elif name not in pinned.files:
            message = f"{name} is not in {SUM_FILE}: run {_WRITE} to add it"
        elif pinned.files[name] != hashes[name]:
            message = (
                f"{name} was edited after it was recorded in {SUM_FILE} (recorded {pinned.files[name][:12]}…, "
                f"now {hashes[name][:12]}…): a released migration must not change; revert the edit, or if it is "
                f"intended run {_WRITE} and accept it on each tenant that ran it (POST /tenants/{{id}}/repair)"
            )
        else:
            continue
        out.append(Finding("sum", message, name))
    return out


# -- the other checks ---------------------------------------------------------------------------------------


def _sql_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".sql")


def _file_problems(directory: Path) -> tuple[list[Finding], list[Finding]]:
    """What stops the service from loading the folder (as it loads it: a journal is the truth), and the files a
    journal leaves out, as warnings naming them."""
    if layouts.detect(directory) not in ("nnnn", "drizzle"):
        try:
            layouts.load(directory)
        except MigrationSetInvalid as exc:
            return [Finding("files", p) for p in exc.problems], []
        return [], []
    _, found = migrations.inspect(directory)
    errors = [Finding("files", p) for p in found.problems] + [Finding("journal", p) for p in found.journal]
    warnings = [Finding("journal", _fix_hint(w), w.split(" ", 1)[0]) for w in found.warnings]
    return errors, warnings


def _syntax_problems(directory: Path, names: Sequence[str]) -> list[Finding]:
    """Seeds too: a seed that does not parse fails every creation."""
    seeds = directory / "seeds"
    paths = [(directory / n, n) for n in names]
    # Prisma keeps each migration as <folder>/migration.sql.
    paths += [(p, f"{p.parent.name}/{p.name}") for p in sorted(directory.glob("*/migration.sql"))]
    paths += [(s, f"seeds/{s.name}") for s in sorted(seeds.glob("*.sql"))] if seeds.is_dir() else []
    return [
        Finding("syntax", str(p), p.file, p.line, column=p.column)
        for path, name in paths
        for p in syntax.file_problems(path, name)
    ]


def _fix_hint(warning: str) -> str:
    """A file the journal leaves out: if it is new (after the journal's last entry), ``--fix-journal`` adds it."""
    if f"is not in {journal.JOURNAL}" in warning:
        return f"{warning}; if it is a new file, `tenantctl check --fix-journal` adds it"
    return warning


def _bom_problems(directory: Path, names: Sequence[str]) -> list[Finding]:
    """drizzle-kit sends a file's byte order mark to the server, which fails on it; the service drops it."""
    return [
        Finding("files", f"{n} starts with a byte order mark: drizzle-kit migrate fails on it; save it without", n)
        for n in names
        if (directory / n).read_bytes().startswith(b"\xef\xbb\xbf")
    ]


def _lint(directory: Path, names: Sequence[str]) -> list[Finding]:
    targets = [(directory / n, _transactional(directory / n)) for n in names]
    found = lint.lint([t for t in targets if nnnn.FILE_PATTERN.fullmatch(t[0].name)])
    return [Finding("lint", f"{f.rule}: {f.message}", f.file, f.line, f.rule) for f in found]


def _transactional(path: Path) -> bool:
    try:
        text = migrations.normalise(path.read_bytes())
    except UnicodeDecodeError:
        return True
    return migrations.runs_in_transaction(text)
