"""Flag statements in new migration files that lock or rewrite a live table, using squawk.

squawk (PyPI ``squawk-cli``, a self-contained binary) is the maintained linter for PostgreSQL migrations; we run
it rather than keep rules of our own, and keep only its findings about locks and rewrites (``RULES``). Its style
rules (``bigint`` over ``int``, ``IF NOT EXISTS``, timeouts …) would fire on nearly every file drizzle-kit
generates and bury the few findings that can stall every tenant during a deploy.

A file that runs in a transaction (every file without ``-- tenants:no-transaction``) is linted with
``--assume-in-transaction``: squawk then knows that an index or foreign key on a table created earlier in the same
file locks nobody, and flags only those on existing tables. A finding is silenced for one statement with a
``-- squawk-ignore <rule>`` comment above it, or for the project in a ``.squawk.toml``, both read by squawk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from service.errors import LintUnavailable

RULES: Final = frozenset(
    {
        "adding-required-field",  # NOT NULL column without a default: fails on rows, or forces a backfill
        "adding-not-nullable-field",  # SET NOT NULL: full scan under ACCESS EXCLUSIVE
        "adding-field-with-default",  # volatile default or generated column: table rewrite
        "adding-serial-primary-key-field",  # index build under ACCESS EXCLUSIVE
        "changing-column-type",  # table rewrite under ACCESS EXCLUSIVE
        "require-concurrent-index-creation",  # blocks writes while the index builds
        "require-concurrent-index-deletion",  # ACCESS EXCLUSIVE
        "require-concurrent-reindex",
        "constraint-missing-not-valid",  # validating scan while writes wait
        "adding-foreign-key-constraint",  # SHARE ROW EXCLUSIVE on both tables during the scan
        "disallowed-unique-constraint",  # index build under ACCESS EXCLUSIVE
        "ban-alter-domain-with-add-constraint",  # scans every column of the domain
        "syntax-error",  # squawk could not read the rest of the file, so it was not linted
    }
)
_TIMEOUT_S: Final = 120


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    rule: str
    message: str
    help: str | None = None


def lint(files: Sequence[tuple[Path, bool]]) -> list[Finding]:
    """Lint ``(path, runs in a transaction)`` pairs; findings in file, line order.

    Raises :class:`LintUnavailable` when squawk is not installed or does not answer with its JSON report.
    """
    findings: list[Finding] = []
    for in_transaction in (True, False):
        paths = [path for path, transactional in files if transactional is in_transaction]
        if paths:
            findings.extend(_run(paths, in_transaction))
    return sorted(findings, key=lambda f: (f.file, f.line, f.column, f.rule))


def squawk() -> str:
    """The squawk binary: beside this interpreter (a virtualenv not on PATH), else on PATH."""
    here = Path(sys.executable).parent / "squawk"
    if here.is_file():
        return str(here)
    found = shutil.which("squawk")
    if found is None:
        raise LintUnavailable()
    return found


def _run(paths: Sequence[Path], in_transaction: bool) -> list[Finding]:
    command = [squawk(), "--reporter", "json", *(["--assume-in-transaction"] if in_transaction else [])]
    try:
        done = subprocess.run(
            [*command, *map(str, paths)], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LintUnavailable(f"squawk did not run: {exc}") from exc
    try:
        report = json.loads(done.stdout)
    except ValueError as exc:
        detail = (done.stderr or done.stdout).strip()[:500]
        raise LintUnavailable(f"squawk failed (exit {done.returncode}): {detail}") from exc
    return [_finding(item) for item in report if item.get("rule_name") in RULES]


def _finding(item: dict[str, Any]) -> Finding:
    # squawk counts lines and columns from 0.
    return Finding(
        file=Path(item["file"]).name,
        line=int(item["line"]) + 1,
        column=int(item["column"]) + 1,
        rule=item["rule_name"],
        message=item["message"],
        help=item.get("help"),
    )
