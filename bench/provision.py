"""Latency of one POST /tenants with the default history, against the in-process asyncpg limit, interleaved.

The limit is the least work any implementation must do for the same tenant: CREATE DATABASE, connect, one
transaction per chain segment sending each file as one query, the history rows and the seed. The service is
measured through real HTTP (uvicorn on a loopback port), so its figure includes the HTTP stack and the catalog.

    python -m bench.provision [--runs 20]            # embedded, durable cluster in a temp dir
    TENANTS_DATABASE_URL=postgresql://... python -m bench.provision

Prints medians and the ratio; paste them into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import asyncpg
import httpx

from bench.harness import ROOT, database_server, drop_databases, running_service, settings_for
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
    for batch in migrations.plan(ms.migrations, seed=True):
        async with conn.transaction():
            await conn.execute(
                "CREATE SCHEMA IF NOT EXISTS h; CREATE TABLE IF NOT EXISTS h.v (v int, name text, sha text, ms float8)"
            )
            for m in batch.migrations:
                await conn.execute("\n;\n".join(s.sql for s in m.statements))
            # One JSON parameter, as the service does: arrays of int4/float8 would cost a type lookup per new
            # connection (about 10 ms) that the limit must not pay.
            await conn.execute(
                "INSERT INTO h.v SELECT * FROM jsonb_to_recordset($1::text::jsonb)"
                " AS r(v int, name text, sha text, ms float8)",
                json.dumps([{"v": m.version, "name": m.name, "sha": m.sha256, "ms": 0.0} for m in batch.migrations]),
            )
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


async def main(runs: int) -> None:
    tag = uuid.uuid4().hex[:6]
    ms = migrations.load(ROOT / "migrations")
    service_s: list[float] = []
    limit_s: list[float] = []
    made: list[str] = [f"bench_{tag}"]
    async with database_server() as (dsn, version):
        try:
            async with (
                running_service(settings_for(dsn, tag)) as url,
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
    print(f"server: {version}; runs: {runs}; files: {len(ms.migrations)} + {len(ms.seeds)} seeds")
    print(f"POST /tenants (HTTP)      median {service_ms:7.1f} ms  (min {min(service_s) * 1000:.1f})")
    print(f"asyncpg in-process limit  median {limit_ms:7.1f} ms  (min {min(limit_s) * 1000:.1f})")
    print(f"ratio service/limit       {service_ms / limit_ms:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
