"""Runs a planned chain of migration batches (and the seed) on one tenant connection.

Each transactional batch commits its files, their history rows (ours, and drizzle's for a Drizzle Kit folder)
and, for a new tenant, the seed together. A file that is not one transaction runs alone, part by part
(:mod:`service.history.stepwise`). Sending a file and naming a failing statement is :mod:`.execute`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from service.errors import DatabaseUnavailable, MigrationFailed
from service.history import drizzle, stepwise
from service.history import table as history
from service.history.execute import Unlocated, failure, replay, run_in_transaction, unavailable
from service.history.migrations import Batch, Migration, SqlFile
from service.history.stepwise import Resume
from service.store.db import Conn, PostgresError, is_unavailable

__all__ = ["Resume", "SeedValues", "apply", "seed_cloned"]

log = logging.getLogger(__name__)

_SETTINGS: Final = "SELECT set_config(k, v, true) FROM unnest($1::text[], $2::text[]) AS s(k, v)"


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
    resume: Resume | None = None,
) -> list[Migration]:
    """Apply every batch in order; return the migrations committed.

    ``resume`` continues a half-applied file (it must be the first file of ``batches``) after its last committed
    statement. Raises :class:`MigrationFailed` (details: version, file, statement, line, sqlstate, and part/parts
    for a file run in parts) when a statement fails; batches before the failing one stay committed, and so do the
    parts of its file before the failing statement. Raises :class:`DatabaseUnavailable` if the server goes away.
    """
    committed: list[Migration] = []
    # Without ensure_history the tenant has _tenants, but maybe not its newer progress table: a file run in parts
    # asserts it once (stepwise.Ready).
    ready = stepwise.Ready()
    history_ready = not ensure_history
    for batch in batches:
        if not batch.transactional:
            migration = batch.migrations[0]
            duration = await stepwise.run(conn, migration, resume, ready)
            history_ready = True
            _applied(migration, duration, transaction=False)
            committed.append(migration)
            continue
        try:
            async with conn.transaction():
                if not history_ready:
                    await history.ensure(conn)
                    ready.history = True
                done = [(m, await run_in_transaction(conn, m)) for m in batch.migrations]
                await history.record(conn, done)
                if not ready.drizzle and any(m.drizzle_when is not None for m in batch.migrations):
                    await drizzle.ensure(conn)
                    ready.drizzle = True
                await drizzle.record(conn, batch.migrations)
                if batch.seed:
                    await _seed(conn, seeds, values)
        except Unlocated as missing:
            prelude = _prelude(conn, batch, seeds, values, missing.file)
            raise await replay(conn, missing, prelude) from missing.exc
        except Exception as exc:
            error = _batch_error(exc, [*batch.migrations, *(seeds if batch.seed else ())])
            if error is exc:
                raise
            raise error from exc
        history_ready = True
        committed.extend(batch.migrations)
        for migration, duration in done:
            _applied(migration, duration)
    return committed


def _prelude(
    conn: Conn, batch: Batch, seeds: Sequence[SqlFile], values: SeedValues | None, failed: SqlFile
) -> Callable[[], Awaitable[None]]:
    """What ran before ``failed`` in its batch's transaction, to be run again when locating its statement."""

    async def run() -> None:
        for migration in batch.migrations:
            if migration is failed:
                return
            await run_in_transaction(conn, migration)
        if values is not None:
            keys, vals = values.settings()
            await conn.execute(_SETTINGS, keys, vals)
        for seed in seeds:
            if seed is failed:
                return
            await run_in_transaction(conn, seed)

    return run


def _applied(migration: Migration, duration: float, *, transaction: bool = True) -> None:
    extra: dict[str, object] = {"version": migration.version, "file": migration.file}
    extra["duration_ms"] = round(duration, 3)
    if not transaction:
        extra["transaction"] = False
    log.info("migration applied", extra=extra)


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
    if isinstance(exc, Unlocated):
        return exc.unlocated()
    # A connection lost mid-batch also fails the rollback, with a driver error that hides the first one.
    if is_unavailable(exc):
        return unavailable(exc)
    # COMMIT itself failed (a deferred constraint or trigger): the batch rolled back; blame its last file.
    if isinstance(exc, PostgresError) and files:
        return failure(files[-1], None, exc)
    return exc


async def _seed(conn: Conn, seeds: Sequence[SqlFile], values: SeedValues | None) -> None:
    if values is not None:
        keys, vals = values.settings()
        await conn.execute(_SETTINGS, keys, vals)
    done = [(seed, await run_in_transaction(conn, seed)) for seed in seeds]
    await history.record_seeds(conn, done)
