"""Latency of one POST /tenants with the default history, against the in-process asyncpg limit, interleaved.

The limit is the least work any implementation must do for the same tenant: CREATE DATABASE, connect, one
transaction per chain segment sending each file as one query, the history rows (and drizzle's, for a Drizzle Kit
folder) and the seed. A file that COMMITs half-way runs as the file says: each transactional part one query in a
transaction, each statement after a COMMIT alone. The service is measured through real HTTP (uvicorn on a loopback
port), so its figure includes the HTTP stack and the catalog.

    python -m bench.provision [--runs 20]            # embedded, durable cluster in a temp dir
    python -m bench.provision --files 300 --process  # a generated 300-file Drizzle project (bench/history300.py),
                                                     # the service in a process of its own
    TENANTS_DATABASE_URL=postgresql://... python -m bench.provision

Prints medians and the ratio; paste them into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from bench.harness import ROOT, database_server, drop_databases, free_port, running_service, settings_for
from bench.history300 import generate
from service.history import migrations
from service.identifiers import quote_ident
from service.store.db import with_database


async def limit_once(dsn: str, ms: migrations.MigrationSet, name: str) -> float:
    """The physical limit: the same SQL, no catalog, no HTTP, no locks."""
    started = time.perf_counter()
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    await admin.close()
    conn = await asyncpg.connect(with_database(dsn, name))
    await conn.execute(_TABLES)
    for batch in migrations.plan(ms.migrations, seed=True):
        if not batch.transactional:
            await _parts(conn, batch.migrations[0])
            continue
        async with conn.transaction():
            for m in batch.migrations:
                await conn.execute("\n;\n".join(s.sql for s in m.statements))
            await _rows(conn, batch.migrations)
            if batch.seed:
                await conn.execute(
                    "SELECT set_config('tenant.id', $1, true), set_config('tenant.name', $1, true),"
                    " set_config('tenant.seed.admin_email', 'a@b.test', true)",
                    name,
                )
                for seed in ms.seeds:
                    await conn.execute("\n;\n".join(s.sql for s in seed.statements))
    await conn.close()
    return time.perf_counter() - started


_TABLES = """CREATE SCHEMA h; CREATE TABLE h.v (v int, name text, sha text, ms float8);
             CREATE SCHEMA d; CREATE TABLE d.m (id serial PRIMARY KEY, hash text NOT NULL, created_at bigint)"""


async def _rows(conn: asyncpg.Connection, done: tuple[migrations.Migration, ...]) -> None:
    """History rows, and drizzle's, in one statement. One JSON parameter, as the service does: arrays of
    int4/float8 would cost a type lookup per new connection (about 10 ms) that the limit must not pay."""
    await conn.execute(
        "WITH r AS (SELECT * FROM jsonb_to_recordset($1::text::jsonb)"
        " AS r(v int, name text, sha text, ms float8, hash text, at bigint)),"
        " h AS (INSERT INTO h.v SELECT v, name, sha, ms FROM r)"
        " INSERT INTO d.m (hash, created_at) SELECT hash, at FROM r WHERE at IS NOT NULL ORDER BY v",
        json.dumps(
            [
                {
                    "v": m.version,
                    "name": m.name,
                    "sha": m.sha256,
                    "ms": 0.0,
                    "hash": m.drizzle_hash,
                    "at": m.drizzle_when,
                }
                for m in done
            ]
        ),
    )


def _row(m: migrations.Migration) -> dict[str, object]:
    return {"v": m.version, "name": m.name, "sha": m.sha256, "ms": 0.0, "hash": m.drizzle_hash, "at": m.drizzle_when}


async def _parts(conn: asyncpg.Connection, m: migrations.Migration) -> None:
    """A file as it says: transactional parts in a transaction each, the rest one statement at a time."""
    for part in m.parts:
        if part.transactional:
            async with conn.transaction():
                await conn.execute("\n;\n".join(s.sql for s in part.statements))
                if part is m.parts[-1]:
                    await _rows(conn, (m,))
            continue
        for stmt in part.statements:
            await conn.execute(stmt.sql)
        if part is m.parts[-1]:
            await _rows(conn, (m,))


@contextlib.asynccontextmanager
async def service_process(dsn: str, tag: str, folder: Path) -> AsyncIterator[str]:
    """``python -m service serve`` on a loopback port, as deployed: a process of its own. In a thread of the
    benchmark's process (``running_service``) it shares the interpreter with the client and the limit, which cost
    a 300-file chain 10-25% more in this harness (bench/RESULTS.md)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env |= {
        "TENANTS_DATABASE_URL": dsn,
        "TENANTS_MIGRATIONS_DIR": str(folder),
        "TENANTS_CATALOG_DATABASE": f"bench_{tag}",
        "TENANTS_DB_PREFIX": f"b{tag}_",
    }
    log = Path(tempfile.mkdtemp(prefix="bench-service-")) / "service.log"
    with log.open("ab") as out:
        command = [sys.executable, "-m", "service", "serve", "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as probe:
            for _ in range(600):  # up to about a minute
                with contextlib.suppress(httpx.HTTPError):
                    if (await probe.get(f"{url}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 60)


async def main(runs: int, files: int | None, process: bool) -> None:
    tag = uuid.uuid4().hex[:6]
    folder = ROOT / "migrations" if files is None else generate(Path(tempfile.mkdtemp(prefix="history-")), files)
    ms = migrations.load(folder)
    service_s: list[float] = []
    limit_s: list[float] = []
    made: list[str] = [f"bench_{tag}"]
    async with database_server() as (dsn, version):
        try:
            serving = service_process(dsn, tag, folder) if process else running_service(settings_for(dsn, tag, folder))
            async with (
                serving as url,
                httpx.AsyncClient(base_url=url, timeout=120) as client,
            ):
                for i in range(runs):  # interleaved: the machine's noise hits both alike
                    started = time.perf_counter()
                    r = await client.post("/tenants", json={"id": f"t{i}", "seed": {"admin_email": "a@b.test"}})
                    service_s.append(time.perf_counter() - started)
                    assert r.status_code == 201, r.text
                    made.append(f"b{tag}_t{i}")
                    name = f"l{tag}_{i}"
                    limit_s.append(await limit_once(dsn, ms, name))
                    made.append(name)
        finally:
            await drop_databases(dsn, made)
    service_ms = statistics.median(service_s) * 1000
    limit_ms = statistics.median(limit_s) * 1000
    where = "own process" if process else "thread of the benchmark"
    print(f"server: {version}; runs: {runs}; files: {len(ms.migrations)} + {len(ms.seeds)} seeds; service: {where}")
    print(f"POST /tenants (HTTP)      median {service_ms:7.1f} ms  (min {min(service_s) * 1000:.1f})")
    print(f"asyncpg in-process limit  median {limit_ms:7.1f} ms  (min {min(limit_s) * 1000:.1f})")
    print(f"ratio service/limit       {service_ms / limit_ms:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--files", type=int, default=None, help="a generated Drizzle project of this many files")
    parser.add_argument("--process", action="store_true", help="run the service in a process of its own")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.files, args.process))
