"""Running a file that is not one transaction: part by part, its progress committed as it goes.

A part inside a transaction commits with a progress row saying so (``_tenants.progress``). Outside a transaction,
a statement PostgreSQL allows in one (an ``INSERT`` after the file's ``COMMIT``) still runs in a transaction of its
own, with its progress row, so "done" and "recorded as done" can never differ for it; only what PostgreSQL
refuses in a transaction (``CREATE INDEX CONCURRENTLY``, ``VACUUM`` ...) runs bare, and its progress follows. The
file's history row (and drizzle's) replaces the progress row in the transaction of its last part.

A retry (``resume``) starts after the last statement recorded, never re-running what committed. The statement it
starts with may have run, or half-run, before a crash: an index it builds CONCURRENTLY that is there and valid is
kept, one left INVALID is dropped and built again; an index it drops that is already gone is not dropped again.
Before the file is recorded, every index it builds concurrently must be valid: a file is never recorded applied
over an INVALID index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from service.errors import MigrationFailed
from service.history import drizzle, statements
from service.history import table as history
from service.history.execute import (
    Unlocated,
    failure,
    replay,
    run_in_transaction,
    run_one,
    tool_table,
    unavailable,
)
from service.history.migrations import Migration, Part, Statement
from service.identifiers import quote_ident
from service.store.db import Conn, PostgresError

log = logging.getLogger(__name__)

_INVALID = """SELECT n FROM unnest($1::text[]) AS n
              JOIN pg_index i ON i.indexrelid = to_regclass(n) WHERE NOT i.indisvalid"""
_STATE = "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)"


@dataclass(slots=True)
class Ready:
    """What one run of a chain has already created (each costs a few round trips and catalog locks to assert):
    ``_tenants`` with its progress table, and drizzle's table. A failure ends the run, so a flag set inside a
    transaction that then rolls back is never read again."""

    history: bool = False
    drizzle: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a half-applied file stands: statements up to ``statement`` (file numbering) are committed."""

    version: int
    statement: int


async def run(conn: Conn, migration: Migration, resume: Resume | None = None, ready: Ready | None = None) -> float:
    """Run the file's parts from where ``resume`` says (the start by default); return the duration in ms.

    The caller has created the history tables. Raises :class:`MigrationFailed` (with ``part``/``parts``; what
    came before is committed and recorded) or :class:`DatabaseUnavailable`.
    """
    started = time.perf_counter()
    ready = ready if ready is not None else Ready()
    if not ready.history:
        await history.ensure(conn)
        ready.history = True
    done = resume.statement if resume is not None and resume.version == migration.version else 0
    if done == 0 and not migration.parts[0].transactional:
        await tool_table(conn, migration, None)  # a first transactional part takes it in its transaction
    for part in migration.parts:
        last = part is migration.parts[-1]
        todo = tuple(s for s in part.statements if s.number > done)
        if not todo and not last:
            continue
        if part.transactional:
            await _transactional(conn, migration, part, todo, last, started, ready)
        else:
            await _bare(conn, migration, part, todo, resuming=done > 0)
            if last:
                await _finish_after(conn, migration, part, started, ready)
        done = max(done, todo[-1].number if todo else done)
    return (time.perf_counter() - started) * 1000


async def _transactional(
    conn: Conn,
    migration: Migration,
    part: Part,
    todo: tuple[Statement, ...],
    last: bool,
    started: float,
    ready: Ready,
) -> None:
    try:
        async with conn.transaction():
            if part.number == 1 and todo and todo[0] is part.statements[0]:
                await tool_table(conn, migration, None)
            if todo:
                await run_in_transaction(conn, migration, todo, part=part)
            if last:
                await _record(conn, migration, part, started, ready)
            else:
                await history.set_progress(conn, migration, part.number, todo[-1].number)
    except MigrationFailed:
        raise
    except Unlocated as missing:
        raise await replay(conn, missing, _nothing) from missing.exc
    except PostgresError as exc:  # COMMIT itself failed (a deferred constraint): blame the part's last statement
        raise failure(migration, todo[-1] if todo else None, exc, part=part, conn=conn) from exc
    except Exception as exc:
        raise unavailable(exc) from exc


async def _nothing() -> None:
    """A part's transaction holds only the part: nothing runs before it when its failure is located."""


async def _bare(conn: Conn, migration: Migration, part: Part, todo: tuple[Statement, ...], *, resuming: bool) -> None:
    for position, stmt in enumerate(todo):
        kind = statements.classify(stmt.sql)
        if not kind.needs_no_transaction:
            try:
                async with conn.transaction():
                    await run_one(conn, migration, stmt, part=part)
                    await history.set_progress(conn, migration, part.number, stmt.number)
            except MigrationFailed:
                raise
            except PostgresError as exc:  # its COMMIT failed (a deferred constraint)
                raise failure(migration, stmt, exc, part=part, conn=conn) from exc
            except Exception as exc:
                raise unavailable(exc) from exc
            continue
        if not (resuming and position == 0 and await _already_done(conn, migration, part, stmt, kind)):
            await run_one(conn, migration, stmt, part=part)
        await history.set_progress(conn, migration, part.number, stmt.number)
        log.info("statement applied outside a transaction", extra={"file": migration.file, "statement": stmt.number})


async def _already_done(
    conn: Conn, migration: Migration, part: Part, stmt: Statement, kind: statements.StatementKind
) -> bool:
    """Whether the statement a retry starts with had finished before the interruption; an index it left INVALID
    is dropped, so that the statement builds it again."""
    if kind.concurrent_index is None:
        return False
    name = _regclass(kind.concurrent_index)
    valid = await conn.fetchval(_STATE, name)
    if not kind.creates_index:
        return valid is None  # the index is gone: the DROP ran
    if valid:
        return True
    if valid is not None:
        log.warning("dropping the INVALID index %s left by %s, to build it again", name, migration.file)
        await run_one(conn, migration, Statement(stmt.number, stmt.line, f"DROP INDEX CONCURRENTLY {name}"), part=part)
    return False


async def _finish_after(conn: Conn, migration: Migration, part: Part, started: float, ready: Ready) -> None:
    """Record a file whose last part ran outside a transaction, unless it left an index INVALID."""
    try:
        async with conn.transaction():
            await _record(conn, migration, part, started, ready)
    except MigrationFailed:
        raise
    except Exception as exc:
        raise unavailable(exc) from exc


async def _record(conn: Conn, migration: Migration, part: Part, started: float, ready: Ready) -> None:
    await _refuse_invalid(conn, migration, part)
    duration = (time.perf_counter() - started) * 1000
    await tool_table(conn, migration, duration)
    await history.record(conn, [(migration, duration)])
    if migration.drizzle_when is not None and not ready.drizzle:
        await drizzle.ensure(conn)
        ready.drizzle = True
    await drizzle.record(conn, [migration])
    await history.clear_progress(conn, migration.version)


async def _refuse_invalid(conn: Conn, migration: Migration, part: Part) -> None:
    names = [
        _regclass(kind.concurrent_index)
        for s in migration.statements
        if (kind := statements.classify(s.sql)).creates_index and kind.concurrent_index is not None
    ]
    if not names:
        return
    invalid = [r["n"] for r in await conn.fetch(_INVALID, names)]
    if invalid:
        raise MigrationFailed(
            f"{migration.file}: index {', '.join(invalid)} is INVALID (its CONCURRENTLY build failed); the file is "
            f"not recorded as applied. Fix what made the build fail, then migrate again: the retry drops the "
            f"INVALID index and builds it anew",
            version=migration.version,
            file=migration.file,
            part=part.number,
            parts=len(migration.parts),
            invalid_indexes=invalid,
        )


def _regclass(name: str) -> str:
    return ".".join(quote_ident(p) for p in name.split("."))
