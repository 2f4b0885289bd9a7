"""Runs a planned chain of migration batches (and the seed) on one tenant connection.

Each transactional batch commits its files, their history rows and (for a new tenant) the seed together. A file
is sent in one round trip; when it fails, the statement and line are located from the server's error position,
or by replaying the file statement by statement from a savepoint taken in that same round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from service.errors import DatabaseUnavailable, MigrationFailed
from service.history import table as history
from service.history import tooltables
from service.history.migrations import Batch, Migration, SqlFile, Statement
from service.store.db import Conn, PostgresError, is_unavailable

log = logging.getLogger(__name__)

_SAVEPOINT: Final = "SAVEPOINT tenants_file;\n"
_JOIN: Final = "\n;\n"


@dataclass(frozen=True, slots=True)
class SeedValues:
    """Tenant values given to seed files as settings (never spliced into SQL)."""

    tenant_id: str
    name: str
    seed: dict[str, str] = field(default_factory=dict)

    def settings(self) -> tuple[list[str], list[str]]:
        keys = ["tenant.id", "tenant.name", *(f"tenant.seed.{k}" for k in self.seed)]
        return keys, [self.tenant_id, self.name, *self.seed.values()]


async def apply(
    conn: Conn,
    batches: Sequence[Batch],
    *,
    seeds: Sequence[SqlFile] = (),
    values: SeedValues | None = None,
    ensure_history: bool = True,
) -> list[Migration]:
    """Apply every batch in order; return the migrations committed.

    Raises :class:`MigrationFailed` (details: version, file, statement, line, sqlstate) when a statement fails;
    batches before the failing one stay committed. Raises :class:`DatabaseUnavailable` if the server goes away.
    """
    committed: list[Migration] = []
    history_ready = not ensure_history
    for batch in batches:
        if not batch.transactional:
            if not history_ready:
                await history.ensure(conn)
                history_ready = True
            migration = batch.migrations[0]
            duration = await _run_alone(conn, migration)
            await history.record(conn, [(migration, duration)])
            log.info(
                "migration applied",
                extra={
                    "version": migration.version,
                    "file": migration.file,
                    "duration_ms": round(duration, 3),
                    "transaction": False,
                },
            )
            committed.append(migration)
            continue
        try:
            async with conn.transaction():
                if not history_ready:
                    await history.ensure(conn)
                done = [(m, await _run_in_transaction(conn, m)) for m in batch.migrations]
                await history.record(conn, done)
                if batch.seed:
                    await _seed(conn, seeds, values)
        except Exception as exc:
            error = _batch_error(exc, [*batch.migrations, *(seeds if batch.seed else ())])
            if error is exc:
                raise
            raise error from exc
        history_ready = True
        committed.extend(batch.migrations)
        for migration, duration in done:
            log.info(
                "migration applied",
                extra={"version": migration.version, "file": migration.file, "duration_ms": round(duration, 3)},
            )
    return committed


async def seed_cloned(conn: Conn, seeds: Sequence[SqlFile], values: SeedValues) -> None:
    """Finish a tenant cloned from a template (:mod:`service.template`): in one transaction, its history rows
    become ``cloned`` and the seed runs with the tenant's values, as it does in the last batch of a replay.

    Raises :class:`MigrationFailed` naming the seed file, or :class:`DatabaseUnavailable`; nothing is committed.
    """
    try:
        async with conn.transaction():
            await history.mark_cloned(conn)
            await _seed(conn, seeds, values)
    except Exception as exc:
        error = _batch_error(exc, seeds)
        if error is exc:
            raise
        raise error from exc


def _batch_error(exc: Exception, files: Sequence[SqlFile]) -> Exception:
    """What a failed transactional batch of ``files`` raises."""
    if isinstance(exc, MigrationFailed | DatabaseUnavailable):
        return exc
    # A connection lost mid-batch also fails the rollback, with a driver error that hides the first one.
    if is_unavailable(exc):
        return _unavailable(exc)
    # COMMIT itself failed (a deferred constraint or trigger): the batch rolled back; blame its last file.
    if isinstance(exc, PostgresError) and files:
        return failure(files[-1], None, exc)
    return exc


async def _seed(conn: Conn, seeds: Sequence[SqlFile], values: SeedValues | None) -> None:
    if values is not None:
        keys, vals = values.settings()
        await conn.execute("SELECT set_config(k, v, true) FROM unnest($1::text[], $2::text[]) AS s(k, v)", keys, vals)
    done = [(seed, await _run_in_transaction(conn, seed)) for seed in seeds]
    await history.record_seeds(conn, done)


async def _run_in_transaction(conn: Conn, file: SqlFile) -> float:
    started = time.perf_counter()
    await _tool_table(conn, file, None)
    text = _SAVEPOINT + _JOIN.join(s.sql for s in file.statements)
    try:
        await conn.execute(text)
    except PostgresError as exc:
        raise await _locate(conn, file, exc) from exc
    except Exception as exc:
        raise _unavailable(exc) from exc
    duration = (time.perf_counter() - started) * 1000
    await _tool_table(conn, file, duration)
    return duration


async def _run_alone(conn: Conn, file: Migration) -> float:
    started = time.perf_counter()
    await _tool_table(conn, file, None)
    for stmt in file.statements:
        try:
            await conn.execute(stmt.sql)
        except PostgresError as exc:
            raise failure(file, stmt, exc) from exc
        except Exception as exc:
            raise _unavailable(exc) from exc
    duration = (time.perf_counter() - started) * 1000
    await _tool_table(conn, file, duration)
    return duration


async def _tool_table(conn: Conn, file: SqlFile, duration: float | None) -> None:
    """The file's tool history-table step (history/tooltables): before it (``duration`` None) or after it."""
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
        raise _unavailable(exc) from exc


async def _locate(conn: Conn, file: SqlFile, exc: PostgresError) -> MigrationFailed:
    """Name the failing statement of a file that was sent as one query."""
    position = _int(getattr(exc, "position", None))
    if position is not None:
        offset = position - 1 - len(_SAVEPOINT)
        for stmt in file.statements:
            if offset < len(stmt.sql) + len(_JOIN):
                return failure(file, stmt, exc, offset=max(offset, 0))
            offset -= len(stmt.sql) + len(_JOIN)
    if is_unavailable(exc):
        return failure(file, None, exc)
    # No position: replay from the savepoint, one statement at a time, to find the one that fails.
    await conn.execute("ROLLBACK TO SAVEPOINT tenants_file")
    for stmt in file.statements:
        try:
            await conn.execute(stmt.sql)
        except PostgresError as again:
            return failure(file, stmt, again)
    return failure(file, None, exc)


def failure(file: SqlFile, stmt: Statement | None, exc: PostgresError, *, offset: int = 0) -> MigrationFailed:
    line = None
    if stmt is not None:
        line = stmt.line + stmt.sql.count("\n", 0, offset)
    message = str(exc) or type(exc).__name__
    return MigrationFailed(
        f"{file.file}: {message}",
        version=file.version if isinstance(file, Migration) else None,
        file=file.file,
        statement=None if stmt is None else stmt.number,
        line=line,
        sqlstate=getattr(exc, "sqlstate", None),
        pg_detail=getattr(exc, "detail", None),
    )


def _unavailable(exc: Exception) -> Exception:
    if is_unavailable(exc):
        return DatabaseUnavailable(f"database connection lost: {type(exc).__name__}: {exc}")
    return exc


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
