"""What a migration statement does, decided by PostgreSQL's own parser (pglast), never by pattern matching.

Two facts change how a file may run: a statement that PostgreSQL refuses inside a transaction block, and
``ALTER TYPE … ADD VALUE``, whose new label cannot be used before the adding transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pglast
from pglast import ast, enums
from pglast.parser import ParseError

Control = Literal["begin", "commit", "rollback"]


@dataclass(frozen=True, slots=True)
class StatementKind:
    adds_enum_value: bool = False
    needs_no_transaction: bool = False
    parsed: bool = True
    # BEGIN/START TRANSACTION, COMMIT/END, ROLLBACK/ABORT: a file that manages its own transactions.
    control: Control | None = None
    # What CREATE EXTENSION names, so a missing extension's error can say which one and where.
    extensions: tuple[str, ...] = ()
    # Indexes a statement creates or drops CONCURRENTLY (schema-qualified when written so).
    concurrent_index: str | None = None
    creates_index: bool = False

    @property
    def controls_transaction(self) -> bool:
        return self.control is not None


def classify(sql: str) -> StatementKind:
    """Classify one chunk of SQL (which may hold several statements)."""
    try:
        tree = pglast.parse_sql(sql)
    except ParseError:
        # The server has the last word on syntax; an unparsable chunk is run as written.
        return StatementKind(parsed=False)
    adds = False
    no_tx = False
    control: Control | None = None
    extensions: list[str] = []
    for raw in tree:
        stmt = raw.stmt
        if isinstance(stmt, ast.AlterEnumStmt) and stmt.oldVal is None and stmt.newVal is not None:
            adds = True
        elif isinstance(stmt, ast.TransactionStmt) and stmt.kind in _CONTROL:
            control = _CONTROL[stmt.kind]
        elif stmt is not None and _refuses_transaction(stmt):
            no_tx = True
        if isinstance(stmt, ast.CreateExtensionStmt) and stmt.extname:
            extensions.append(stmt.extname)
    index, creates = _concurrent_index(tree) if len(tree) == 1 else (None, False)
    return StatementKind(
        adds_enum_value=adds,
        needs_no_transaction=no_tx,
        control=control,
        extensions=tuple(extensions),
        concurrent_index=index,
        creates_index=creates,
    )


_CONTROL: dict[enums.TransactionStmtKind, Control] = {
    enums.TransactionStmtKind.TRANS_STMT_BEGIN: "begin",
    enums.TransactionStmtKind.TRANS_STMT_START: "begin",
    enums.TransactionStmtKind.TRANS_STMT_COMMIT: "commit",
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK: "rollback",
}


def _concurrent_index(tree: tuple[ast.RawStmt, ...]) -> tuple[str | None, bool]:
    """The index a lone ``CREATE/DROP INDEX CONCURRENTLY`` names, and whether it creates it."""
    stmt = tree[0].stmt
    if isinstance(stmt, ast.IndexStmt) and stmt.concurrent and stmt.idxname:
        schema = stmt.relation.schemaname if stmt.relation is not None else None
        return (f"{schema}.{stmt.idxname}" if schema else stmt.idxname), True
    if isinstance(stmt, ast.DropStmt) and stmt.concurrent and stmt.objects and len(stmt.objects) == 1:
        names = [getattr(n, "sval", "") for n in stmt.objects[0]]
        return ".".join(names), False
    return None, False


def is_blank(sql: str) -> bool:
    """True when a chunk holds nothing but comments and whitespace (PostgreSQL would run no statement)."""
    try:
        return not pglast.parse_sql(sql)
    except ParseError:
        return False


_SAVEPOINT_KINDS = frozenset(
    {
        enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT,
        enums.TransactionStmtKind.TRANS_STMT_RELEASE,
        enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO,
    }
)


def _refuses_transaction(stmt: ast.Node) -> bool:
    if isinstance(stmt, ast.IndexStmt | ast.DropStmt):
        return bool(stmt.concurrent)
    if isinstance(stmt, ast.ReindexStmt):
        return any(getattr(p, "defname", None) == "concurrently" for p in stmt.params or ())
    if isinstance(stmt, ast.VacuumStmt):
        return bool(stmt.is_vacuumcmd)  # ANALYZE is a VacuumStmt too, and runs fine inside a transaction
    if isinstance(stmt, ast.TransactionStmt):
        # PREPARE TRANSACTION and the like; BEGIN/COMMIT/ROLLBACK are the file's own control (see parts.py).
        return stmt.kind not in _SAVEPOINT_KINDS
    return isinstance(
        stmt,
        ast.VacuumStmt | ast.AlterSystemStmt | ast.CreatedbStmt | ast.DropdbStmt | ast.CreateTableSpaceStmt,
    )


def split(sql: str) -> list[tuple[int, str]]:
    """Split a chunk into single statements as ``(character offset, text)`` pairs.

    Needed for files that run outside a transaction: a multi-statement simple query is an implicit transaction,
    so ``CREATE INDEX CONCURRENTLY`` must be sent alone.
    """
    try:
        pieces = pglast.split(sql)
    except ParseError:
        return [(0, sql)]
    out: list[tuple[int, str]] = []
    pos = 0
    for piece in pieces:
        at = sql.find(piece, pos)
        at = pos if at < 0 else at
        out.append((at, piece))
        pos = at + len(piece)
    return out
