"""Sending one file's statements and naming the one that failed: shared by the chain and by files run part by part.

A file (or a part of one) is sent in one round trip; when it fails, the statement and line are located from the
server's error position. An error without one (a constraint violated at run time) leaves :class:`Unlocated`,
and once its transaction has rolled back, :func:`replay` runs what came before again in a transaction it rolls
back, then the file one statement at a time, to find the statement. Not a savepoint per file: a transaction with
more than 64 subtransactions overflows PostgreSQL's per-backend cache of them, which made a 300-file chain about
15% slower (bench/RESULTS.md). A missing extension is named with the server it is missing on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from service.errors import DatabaseUnavailable, MigrationFailed
from service.history import statements, tooltables
from service.history.migrations import Migration, Part, SqlFile, Statement
from service.store.db import Conn, PostgresError, is_unavailable

_JOIN: Final = "\n;\n"
# feature_not_supported (PostgreSQL 15+: "extension is not available"), undefined_file (older: no control file).
_NO_EXTENSION: Final = ("0A000", "58P01")


async def run_in_transaction(
    conn: Conn, file: SqlFile, stmts: Sequence[Statement] | None = None, *, part: Part | None = None
) -> float:
    """Send ``stmts`` (the whole file by default) in one round trip inside the caller's transaction; return ms."""
    started = time.perf_counter()
    whole = stmts is None
    todo = file.statements if stmts is None else stmts
    if whole:
        await tool_table(conn, file, None)
    try:
        await conn.execute(_JOIN.join(s.sql for s in todo))
    except PostgresError as exc:
        located = _by_position(conn, file, todo, exc, part)
        if located is not None:
            raise located from exc
        if is_unavailable(exc):
            raise failure(file, None, exc, part=part) from exc
        raise Unlocated(file, todo, exc, part) from exc
    except Exception as exc:
        raise unavailable(exc) from exc
    duration = (time.perf_counter() - started) * 1000
    if whole:
        await tool_table(conn, file, duration)
    return duration


async def tool_table(conn: Conn, file: SqlFile, duration: float | None) -> None:
    """The file's step in its tool's history table (history/tooltables): before it (``duration`` None) or after
    it, in the file's transaction when it has one."""
    if not isinstance(file, Migration) or file.origin is None:
        return
    try:
        if duration is None:
            await tooltables.before(conn, file)
        else:
            await tooltables.after(conn, file, duration)
    except PostgresError as exc:
        raise failure(file, None, exc) from exc
    except Exception as exc:
        raise unavailable(exc) from exc


class Unlocated(Exception):
    """A file failed without an error position: which statement it was needs :func:`replay`."""

    def __init__(self, file: SqlFile, todo: Sequence[Statement], exc: PostgresError, part: Part | None) -> None:
        super().__init__(str(exc))
        self.file, self.todo, self.exc, self.part = file, todo, exc, part

    def unlocated(self) -> MigrationFailed:
        """The failure without its statement, for when replaying is not possible."""
        return failure(self.file, None, self.exc, part=self.part)


async def replay(conn: Conn, missing: Unlocated, prelude: Callable[[], Awaitable[object]]) -> MigrationFailed:
    """Name the statement ``missing`` failed at: in a transaction that is rolled back, run ``prelude`` (what ran
    before the file in its transaction), then the file's statements one at a time. Call it outside a transaction."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await prelude()
        for stmt in missing.todo:
            try:
                await conn.execute(stmt.sql)
            except PostgresError as again:
                return failure(missing.file, stmt, again, part=missing.part, conn=conn)
    except (PostgresError, Unlocated, MigrationFailed):
        pass  # the replay went another way: say what is known
    finally:
        await transaction.rollback()
    return missing.unlocated()


async def run_one(conn: Conn, file: SqlFile, stmt: Statement, *, part: Part | None = None) -> None:
    """Send one statement as it is (outside a transaction when the caller has none)."""
    try:
        await conn.execute(stmt.sql)
    except PostgresError as exc:
        raise failure(file, stmt, exc, part=part, conn=conn) from exc
    except Exception as exc:
        raise unavailable(exc) from exc


def _by_position(
    conn: Conn, file: SqlFile, todo: Sequence[Statement], exc: PostgresError, part: Part | None
) -> MigrationFailed | None:
    """Name the failing statement of statements sent as one query from the error's position, if it has one."""
    position = _int(getattr(exc, "position", None))
    if position is None:
        return None
    offset = position - 1
    for stmt in todo:
        if offset < len(stmt.sql) + len(_JOIN):
            return failure(file, stmt, exc, offset=max(offset, 0), part=part, conn=conn)
        offset -= len(stmt.sql) + len(_JOIN)
    return None


def failure(
    file: SqlFile,
    stmt: Statement | None,
    exc: PostgresError,
    *,
    offset: int = 0,
    part: Part | None = None,
    conn: Conn | None = None,
) -> MigrationFailed:
    """The error a failed statement becomes: file, version, statement, line, SQLSTATE, and the part of a file
    that runs in several (``part``/``parts``: what before it is committed)."""
    line = None
    if stmt is not None:
        line = stmt.line + stmt.sql.count("\n", 0, offset)
    message = str(exc) or type(exc).__name__
    details: dict[str, object] = {}
    missing = _missing_extension(stmt, exc)
    if missing is not None:
        server = _server(conn)
        message = (
            f'extension "{missing}" is not available on the server ({server}): install its package there, or '
            f"point TENANTS_DATABASE_URL at a server that has it ({message})"
        )
        details.update(extension=missing, server=server)
    if isinstance(file, Migration) and part is not None and (len(file.parts) > 1 or not part.transactional):
        details.update(part=part.number, parts=len(file.parts))
    return MigrationFailed(
        f"{file.file}: {message}",
        version=file.version if isinstance(file, Migration) else None,
        file=file.file,
        statement=None if stmt is None else stmt.number,
        line=line,
        sqlstate=getattr(exc, "sqlstate", None),
        pg_detail=getattr(exc, "detail", None),
        **details,
    )


def _missing_extension(stmt: Statement | None, exc: PostgresError) -> str | None:
    if stmt is None or getattr(exc, "sqlstate", None) not in _NO_EXTENSION:
        return None
    names = statements.classify(stmt.sql).extensions
    return names[0] if len(names) == 1 else None


def _server(conn: Conn | None) -> str:
    """``host:port, PostgreSQL N.M`` of the connection's server, as far as it is known."""
    if conn is None:
        return "unknown server"
    addr = getattr(conn, "_addr", None)  # asyncpg keeps the address it connected to, privately
    where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) == 2 else str(addr or "?")
    version = conn.get_server_version()
    return f"{where}, PostgreSQL {version.major}.{version.minor}"


def unavailable(exc: Exception) -> Exception:
    if is_unavailable(exc):
        return DatabaseUnavailable(f"database connection lost: {type(exc).__name__}: {exc}")
    return exc


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
