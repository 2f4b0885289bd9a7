"""A file's own transaction control: where its ``BEGIN`` and ``COMMIT`` split it into parts.

drizzle-kit runs a whole folder inside one transaction and sends each chunk as written, so a file's ``COMMIT;``
ends that transaction and what follows runs in autocommit (each statement on its own) until a ``BEGIN;`` opens a
new one. Real projects rely on it to run ``CREATE INDEX CONCURRENTLY``, which PostgreSQL refuses in a
transaction. The service keeps the file's boundaries: a *part* is a run of statements inside one transaction, or
outside any. The control statements themselves are not sent; a ``BEGIN`` inside a transaction and a ``COMMIT``
outside one change nothing (PostgreSQL only warns), and ``ROLLBACK`` is refused: it would throw away what the
file just did, which is never what a migration means.

A file whose first line is ``-- tenants:no-transaction`` starts outside any transaction; every other file starts
inside one. Pure logic: statements come classified (:mod:`service.history.statements`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from service.history.statements import StatementKind

NO_TRANSACTION_MARKER: Final = "-- tenants:no-transaction"


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement as it is sent to the server, with where it starts in its file (1-based line)."""

    number: int
    line: int
    sql: str


@dataclass(frozen=True, slots=True)
class Part:
    """Statements that run together: in one transaction, or (``transactional=False``) one at a time outside."""

    number: int
    transactional: bool
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class Split:
    parts: tuple[Part, ...]
    problems: list[str] = field(default_factory=list)


def split(
    file: str, stmts: Sequence[Statement], kinds: Sequence[StatementKind], *, starts_in_transaction: bool
) -> Split:
    """The file's parts, in order, and why it cannot run as written (if it cannot)."""
    parts: list[Part] = []
    problems: list[str] = []
    current: list[Statement] = []
    inside = starts_in_transaction

    def close() -> None:
        if current:
            parts.append(Part(len(parts) + 1, inside, tuple(current)))
            current.clear()

    for stmt, kind in zip(stmts, kinds, strict=True):
        where = f"{file}: statement {stmt.number} (line {stmt.line})"
        if kind.control == "rollback":
            problems.append(f"{where}: ROLLBACK would discard what the file just did; remove it")
        elif kind.control == "begin" and not inside:
            close()
            inside = True
        elif kind.control == "commit" and inside:
            close()
            inside = False
        elif kind.control is None:
            if inside and kind.needs_no_transaction:
                problems.append(
                    f"{where} cannot run inside a transaction: put 'COMMIT;' before it (what follows a COMMIT "
                    f"runs outside any transaction, as drizzle-kit runs it), or make '{NO_TRANSACTION_MARKER}' "
                    "the file's first line"
                )
            current.append(stmt)
    close()
    return Split(tuple(parts), problems)
