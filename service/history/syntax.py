"""Syntax errors in migration files, found by PostgreSQL's own parser (pglast) before any server sees them.

Each chunk between drizzle's breakpoints is parsed on its own, as it is sent; a chunk that does not parse would
fail on every tenant, so ``tenantctl check`` makes it an error with its file, line and column. Function bodies
(``$$ … $$``) are strings to this parser: PL/pgSQL inside them is checked by the server when the file runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast.parser import ParseError

from service.history import migrations


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    file: str
    line: int  # 1-based
    column: int  # 1-based, in characters
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


def file_problems(path: Path, name: str | None = None) -> list[SyntaxProblem]:
    """Every chunk of the file that PostgreSQL cannot parse, named ``name`` (default: the file's name); ``[]`` for a
    file that is not UTF-8 (reported elsewhere)."""
    try:
        text = migrations.normalise(path.read_bytes())
    except UnicodeDecodeError:
        return []
    return text_problems(name or path.name, text)


def text_problems(name: str, text: str) -> list[SyntaxProblem]:
    """Parse each chunk of ``text`` (split as the runner splits it); one problem per chunk that fails."""
    found: list[SyntaxProblem] = []
    offset = 0
    for chunk in text.split(migrations.BREAKPOINT):
        error = _parse_error(chunk)
        if error is not None:
            message, at = error
            position = offset + at
            line_start = text.rfind("\n", 0, position) + 1
            found.append(SyntaxProblem(name, text.count("\n", 0, position) + 1, position - line_start + 1, message))
        offset += len(chunk) + len(migrations.BREAKPOINT)
    return found


def _parse_error(chunk: str) -> tuple[str, int] | None:
    """The parser's message and the character offset it points at (the chunk's end for "end of input")."""
    try:
        pglast.parse_sql(chunk)
    except ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(chunk.rstrip())
        return message, min(max(at, 0), len(chunk))
    return None
