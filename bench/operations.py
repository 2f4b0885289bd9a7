"""The end of a recorded operation with and without the tenant's ``last_error`` (catalog_0010.sql, issue 12).

Every tenant operation ends with ``catalog.end_operation``; it now also sets or clears ``tenants.last_error`` in the
same statement. This measures that statement against the one it replaced (the limit: the operation row alone),
interleaved round by round in one catalog database with ``--tenants`` rows, each a begin + end of one operation on
a random tenant, success and failure paths. Medians per operation and their ratio.

    TENANTS_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.operations
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid

import asyncpg

from bench.harness import database_server, drop_databases
from service.store import catalog
from service.store.db import with_database

_OLD = "UPDATE operations SET state = $2, finished_at = now(), error = $3::jsonb WHERE id = $1"
_ERROR = json.dumps({"code": "tool_failed", "message": "pg_dump failed"})


async def _round(conn: asyncpg.Connection, n: int, tenants: int, *, new: bool, fail: bool) -> float:
    """Median seconds of one begin + end, over ``n`` operations."""
    times = []
    for _ in range(n):
        tenant = f"t{random.randrange(tenants)}"  # noqa: S311 - load spread, not security
        started = time.perf_counter()
        op = await catalog.begin_operation(conn, tenant, "backup")
        if new:
            await catalog.end_operation(conn, op, json.loads(_ERROR) if fail else None)
        else:
            await conn.execute(_OLD, op, "failed" if fail else "succeeded", _ERROR if fail else None)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main(args: argparse.Namespace) -> None:
    async with database_server() as (dsn, description):
        name = f"bench_ops_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        try:
            conn = await asyncpg.connect(with_database(dsn, name))
            await catalog.upgrade(conn)
            await conn.execute(
                """INSERT INTO tenants (id, name, database, state, request_sha256)
                   SELECT 't' || n, 't' || n, 'd' || n, 'ready', 'x' FROM generate_series(0, $1 - 1) n""",
                args.tenants,
            )
            print(f"server: {description}; {args.tenants} tenants; load average {os.getloadavg()[0]:.2f}")
            for fail in (False, True):
                old, new = [], []
                for _ in range(args.rounds):  # interleaved: old, new, old, new, ...
                    old.append(await _round(conn, args.ops, args.tenants, new=False, fail=fail))
                    new.append(await _round(conn, args.ops, args.tenants, new=True, fail=fail))
                o, w = statistics.median(old) * 1000, statistics.median(new) * 1000
                path = "failure (sets last_error)" if fail else "success (clears it only if set)"
                print(f"{path}: operation row only {o:.3f} ms, with last_error {w:.3f} ms, ratio {w / o:.2f}x")
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            await conn.close()
        finally:
            await drop_databases(dsn, [name])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ops", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
