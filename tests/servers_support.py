"""A second PostgreSQL cluster beside the session one, for tests of several database servers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres
from tests.process import free_port


@contextmanager
def second_cluster() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A throwaway cluster on tmpfs (its data dies with it, so no cleanup of what tests make there)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - mkdtemp makes a private dir
    data = Path(tempfile.mkdtemp(prefix="tenants-second-", dir=base))
    pg = EmbeddedPostgres(data, port=free_port(), durable=False)
    try:
        yield pg, pg.start()
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


def two_servers(url_a: str, url_b: str, capacity_a: int | None = None, capacity_b: int | None = None) -> list[Any]:
    return [{"name": "a", "url": url_a, "capacity": capacity_a}, {"name": "b", "url": url_b, "capacity": capacity_b}]


async def names_on(url: str, prefix: str) -> tuple[set[str], set[str]]:
    """The databases and the roles of a cluster whose names start with ``prefix``."""
    conn = await asyncpg.connect(url)
    try:
        dbs = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
        roles = await conn.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix)
    finally:
        await conn.close()
    return {r["datname"] for r in dbs}, {r["rolname"] for r in roles}


async def execute(url: str, database: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(with_database(url, database))
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


async def backends(url: str, database: str) -> list[int]:
    """Client backends connected to ``database`` (their pids)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' ORDER BY pid",
            database,
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]
