"""Move of a big tenant between two servers against the limit: ``pg_dump | pg_restore`` of the same database run by
hand, interleaved, medians; and the write-unavailability window a client sees during the move.

Two durable embedded clusters in a temp dir (the catalog on the first). The tenant (migrations of
``tests/fixtures/migrations/ok``) is filled with ``INSERT … SELECT generate_series`` to ``--mb`` megabytes. Then, for
``--runs`` rounds: the limit (``CREATE DATABASE`` on the other server, then ``pg_dump -Fc -Z0 | pg_restore`` with the
same binaries and flags the service uses, as an operator would type it) and one move of the tenant to the other
server (``Provisioner.move(wait=True)``: role with its verifier, freeze, the same pipe, grants, verification, switch,
``CONNECT`` on the target: what the caller waits for), and the time until the source's database is dropped too
(after the answer; waited for before the next round). The move's own per-step seconds (its ``move timings`` log
record) are printed per round. During each move a writer inserts a row every 10 ms through the tenant's own role,
on the source's URL until it fails, then on the target's (retrying every 100 ms after a refusal): the window is the
time between the last insert acknowledged on the source and the first on the target.

    python -m bench.move [--mb 500] [--runs 7]

Prints the figures for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from pydantic import SecretStr

from service.config import Settings
from service.history.migrations import load
from service.store import catalog, pgtools
from service.store.db import Server
from service.store.embedded import EmbeddedPostgres
from service.tenants.create import CreateRequest
from service.tenants.provisioner import Provisioner

ROOT = Path(__file__).resolve().parent.parent
RETRY_SECONDS = 0.1  # the window's resolution


async def fill(url: str, megabytes: int) -> int:
    """Rows of ~330 bytes into accounts until the database holds ``megabytes``; returns its size in bytes."""
    conn = await asyncpg.connect(url)
    try:
        n = 0
        while (size := await conn.fetchval("SELECT pg_database_size(current_database())")) < megabytes * 2**20:
            await conn.execute(
                "INSERT INTO accounts (email, name) SELECT 'user' || g || '@example.test', repeat(md5(g::text), 9)"
                " FROM generate_series($1::int, $1::int + 199999) g",
                n + 1_000_000,
            )
            n += 200_000
        await conn.execute("VACUUM ANALYZE accounts")
        return int(size)
    finally:
        await conn.close()


async def limit(tools: pgtools.Tools, src_dsn: str, dst_dsn: str, database: str) -> float:
    """The hand-run copy: an empty database, then pg_dump | pg_restore (seconds, the drop afterwards excluded)."""
    scratch = "limit_copy"
    admin = await asyncpg.connect(dst_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        started = time.perf_counter()
        await admin.execute(f'CREATE DATABASE "{scratch}" TEMPLATE template0')
        await pgtools.copy(tools, src_dsn, database, dst_dsn, scratch)
        took = time.perf_counter() - started
        await admin.execute(f'DROP DATABASE "{scratch}" WITH (FORCE)')
        return took
    finally:
        await admin.close()


async def writer(urls: tuple[str, str], stop: asyncio.Event, acks: list[tuple[float, int]]) -> None:
    """Insert every 10 ms: on the source's URL until it fails, then on the target's (retrying every 100 ms after a
    refusal); note (time, which) per ack."""
    which, conn, n = 0, None, 0
    while not stop.is_set():
        n += 1
        try:
            if conn is None:
                conn = await asyncpg.connect(urls[which], timeout=2)
            await conn.execute("INSERT INTO accounts (email) VALUES ($1)", f"probe{n}-{time.time()}@x")
            acks.append((time.perf_counter(), which))
        except Exception:  # refused, terminated, gone: try the other side next, 100 ms later
            if conn is not None:
                conn.terminate()
            conn, which = None, 1 - which
            # Each refused attempt costs the servers a backend and a SCRAM exchange: every 10 ms, they took CPU from
            # the move itself (its pipe ran ~1 s slower than the limit's with nothing else different).
            await asyncio.sleep(RETRY_SECONDS)
        await asyncio.sleep(0.01)
    if conn is not None:
        await conn.close()


def window(acks: list[tuple[float, int]], source: int) -> float:
    last_source = max(t for t, w in acks if w == source)
    first_target = min(t for t, w in acks if w != source and t > last_source)
    return first_target - last_source


class _Stages(logging.Handler):
    """Prints the move's own copy / verify split (its "move copied and verified" log record)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "move timings":
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in record.__dict__["laps"].items()))


async def main(megabytes: int, runs: int) -> None:
    stages = logging.getLogger("service.tenants.move")
    stages.setLevel(logging.INFO)
    stages.addHandler(_Stages())
    base = Path(tempfile.mkdtemp(prefix="bench-move-"))
    clusters = [EmbeddedPostgres(base / name, port=free_port(), durable=True) for name in ("a", "b")]
    try:
        urls = [c.start() for c in clusters]
        settings = Settings(
            database_url=SecretStr(urls[0]),
            migrations_dir=ROOT / "tests" / "fixtures" / "migrations" / "ok",
            servers=[{"name": "a", "url": urls[0]}, {"name": "b", "url": urls[1]}],  # type: ignore[arg-type]
            log_level="warning",
        )
        server = Server(urls[0], settings.catalog_database, settings.pool_size)
        await server.open()
        async with server.catalog() as conn:
            await catalog.upgrade(conn)
        p = Provisioner(server, load(settings.migrations_dir, settings.seeds_path), settings)
        try:
            await run(p, urls, megabytes, runs)
        finally:
            await p.close()
            await server.close()
    finally:
        for c in clusters:
            c.stop()
        shutil.rmtree(base, ignore_errors=True)


async def run(p: Provisioner, urls: list[str], megabytes: int, runs: int) -> None:
    made = await p.create(CreateRequest("big", server="a"))
    assert made.connection_url is not None
    password = urlsplit(made.connection_url).password
    database = made.tenant.database
    started = time.perf_counter()
    size = await fill(made.connection_url, megabytes)
    print(f"tenant database: {size / 2**20:.0f} MiB, filled in {time.perf_counter() - started:.0f} s")
    admin = await asyncpg.connect(urls[0])
    try:
        major = int(await admin.fetchval("SHOW server_version_num")) // 10000
    finally:
        await admin.close()
    tools = pgtools.for_server(major)
    tenant_urls = [_as_role(u, database, password or "") for u in urls]
    limits, moves, windows, settled = [], [], [], []
    here = 0
    for i in range(runs):
        limits.append(await limit(tools, urls[here], urls[1 - here], database))
        stop, acks = asyncio.Event(), []
        probe = asyncio.create_task(writer((tenant_urls[here], tenant_urls[1 - here]), stop, acks))
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        moved = await p.move("big", "ab"[1 - here], wait=True)
        moves.append(time.perf_counter() - t0)
        # The source's drop runs after the answer: waited for here, so that it is not in the next limit.
        while (await p.get("big")).step is not None:  # noqa: ASYNC110 - the catalog is the truth
            await asyncio.sleep(0.01)
        settled.append(time.perf_counter() - t0)
        await asyncio.sleep(1.0)
        stop.set()
        await probe
        windows.append(window(acks, 0))  # 0: the writer's first URL, the source's
        assert moved.server == "ab"[1 - here]
        print(
            f"run {i + 1}: limit {limits[-1]:.2f} s, move {moves[-1]:.2f} s ({moves[-1] / limits[-1]:.2f}x), "
            f"source dropped at {settled[-1]:.2f} s, window {windows[-1]:.2f} s, load {os.getloadavg()[0]:.1f}"
        )
        here = 1 - here
    lim, mov = statistics.median(limits), statistics.median(moves)
    print(
        f"median: limit {lim:.2f} s, move {mov:.2f} s ({mov / lim:.2f}x), source dropped at "
        f"{statistics.median(settled):.2f} s ({statistics.median(settled) / lim:.2f}x), "
        f"window {statistics.median(windows):.2f} s"
    )
    paired = statistics.median(m / li for m, li in zip(moves, limits, strict=True))
    print(f"median of the per-round ratios (the noise of one round cancels within it): move / limit {paired:.2f}x")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_role(admin_url: str, role: str, password: str) -> str:
    parts = urlsplit(admin_url)
    return f"postgresql://{role}:{password}@{parts.hostname}:{parts.port}/{role}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.mb, args.runs))
