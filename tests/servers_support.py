"""A second PostgreSQL cluster beside the session one, for tests of several database servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


class Relay:
    """A TCP relay in front of a server, which a test can cut as a network would: every connection through it is
    reset and new ones are refused, while the server itself keeps running (its backends find out when they next
    write). :meth:`mend` listens again on the same port."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{self.port}")))
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()  # a reset, not an orderly close
        self._open.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()
