"""A burst of asynchronous creations (``Prefer: respond-async``) on two replicas sharing a server with
``max_connections=40``.

``python -m bench.queue --tenants 300`` starts its own durable cluster with ``max_connections=40`` (never the
server of ``TENANTS_DATABASE_URL``), two service processes on loopback ports sharing one catalog, then sends the
burst, alternating replicas, in two shapes, each right after the same shape against ``GET /healthz`` (no database:
the HTTP stack's own limit on this machine, measured interleaved in the same run):

- *paced*: requests sent at ``--rate`` per second (open loop: a slow answer delays no later request);
- *at once*: every request sent at the same moment.

It records the latency of every 202 (and, from each replica's ``/metrics``, how many it answered within 50, 100 and
250 ms by its own clock), waits until every tenant is ``ready``, samples the server's connections every 100 ms (the
peak must stay below ``max_connections``), counts answers that are not 202 and log lines of either replica that
mention connection errors, and counts which process built each tenant (from the audit trail). While the creations
are sent, ``GET /healthz`` and a one-row durable commit in the catalog database are timed every 100 ms: how long the
answering event loop keeps a request waiting, and what the enqueue's own commit costs at that moment.

``--builder process|inline`` (``TENANTS_QUEUE_BUILDER``), ``--replicas``, ``--max-connections``, ``--defaults`` (no
pool sizes set), ``--shapes``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.fleet import Service
from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
MAX_CONNECTIONS = 40
_ERRORS = ("too many clients", "TooManyConnections", "remaining connection slots", "database_unavailable")


class LimitedPostgres(EmbeddedPostgres):
    """The embedded cluster with ``max_connections`` (a later ``-c`` wins over the default one)."""

    limit = MAX_CONNECTIONS

    def _server_options(self, port: int) -> str:
        return f"{super()._server_options(port)} -c max_connections={self.limit}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(ms), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
    }


async def burst(
    client: httpx.AsyncClient, urls: list[str], n: int, rate: float | None, request: Any
) -> tuple[list[float], list[int]]:
    """``n`` requests alternating over ``urls``, paced at ``rate`` per second (None: all at once); their latencies
    (ms) and statuses."""
    latencies: list[float] = [0.0] * n
    statuses: list[int] = [0] * n
    started = time.perf_counter()

    async def one(i: int) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        t0 = time.perf_counter()
        r = await request(client, urls[i % len(urls)], i)
        latencies[i] = (time.perf_counter() - t0) * 1000
        statuses[i] = r.status_code

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies, statuses


async def probe(urls: list[str], catalog_dsn: str, stop: asyncio.Event) -> tuple[list[float], list[float]]:
    """While the burst is sent and built: ``GET /healthz`` on the replicas and a one-row durable commit in the
    catalog database, each every 100 ms; their latencies (ms). The first is how long the answering event loop keeps
    a request waiting, the second what a catalog write (the enqueue) cannot go below at that moment."""
    health: list[float] = []
    commits: list[float] = []
    conn = await asyncpg.connect(catalog_dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (at timestamptz)")
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                await client.get(f"{urls[i % len(urls)]}/healthz")
                health.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO bench_probe VALUES (now())")
                commits.append((time.perf_counter() - t0) * 1000)
                i += 1
                await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return health, commits


_POST_202 = ('handler="/tenants"', 'method="POST"', 'status="202"')


def _bucket(line: str, le: str) -> bool:
    return line.startswith("http_request_duration_seconds_bucket{") and all(
        label in line for label in (*_POST_202, f'le="{le}"')
    )


async def server_side(urls: list[str]) -> dict[str, float]:
    """How many ``202`` answers each replica has given within 50 ms, 100 ms and 250 ms of its own clock so far
    (``/metrics``: from the request's arrival to the last byte sent, without the client's side or the wire)."""
    counts = {"0.05": 0.0, "0.1": 0.0, "0.25": 0.0, "+Inf": 0.0}
    async with httpx.AsyncClient(timeout=60) as client:
        for url in urls:
            lines = (await client.get(f"{url}/metrics")).text.splitlines()
            for le in counts:
                counts[le] += sum(float(x.rsplit(" ", 1)[1]) for x in lines if _bucket(x, le))
    return counts


async def sample_connections(dsn: str, peak: list[int], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            n = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            peak[0] = max(peak[0], int(n))
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def wait_ready(catalog_dsn: str, prefix: str, n: int, limit_s: float) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    conn = await asyncpg.connect(catalog_dsn)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n FROM tenants WHERE starts_with(id, $1) GROUP BY state", prefix
            )
            states = {r["state"]: r["n"] for r in rows}
            if states.get("ready", 0) + states.get("failed", 0) >= n or time.perf_counter() - started > limit_s:
                return time.perf_counter() - started, states
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def builders(catalog_dsn: str, prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(catalog_dsn)
    try:
        rows = await conn.fetch(
            """SELECT detail->>'worker' AS worker, count(*) AS n FROM operations
               WHERE kind = 'create' AND state = 'succeeded' AND starts_with(tenant_id, $1) GROUP BY 1""",
            prefix,
        )
    finally:
        await conn.close()
    return {r["worker"]: r["n"] for r in rows}


def stop(replica: Service) -> None:
    try:
        replica.stop()
    except subprocess.TimeoutExpired:
        assert replica.proc is not None
        replica.proc.kill()
        replica.proc.wait()


async def burst_on_new_client(
    urls: list[str], n: int, rate: float | None, request: Any
) -> tuple[list[float], list[int]]:
    """A burst on a client of its own: no keep-alive connection left from an earlier burst (the server may have
    closed it meanwhile), as many connections as requests in flight."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await burst(client, urls, n, rate, request)


async def run_shape(
    urls: list[str], dsn: str, catalog_dsn: str, n: int, rate: float | None, tag: str, workers: int
) -> dict[str, Any]:
    async def health(c: httpx.AsyncClient, url: str, i: int) -> httpx.Response:
        return await c.get(f"{url}/healthz")

    async def create(c: httpx.AsyncClient, url: str, i: int) -> httpx.Response:
        return await c.post(f"{url}/tenants", json={"id": f"{tag}{i}"}, headers={"Prefer": "respond-async"})

    limit, _ = await burst_on_new_client(urls, n, rate, health)
    peak, stop, probed = [0], asyncio.Event(), asyncio.Event()
    sampler = asyncio.create_task(sample_connections(dsn, peak, stop))
    prober = asyncio.create_task(probe(urls, catalog_dsn, probed))
    before = await server_side(urls)
    latencies, statuses = await burst_on_new_client(urls, n, rate, create)
    after = await server_side(urls)
    probed.set()
    during, commits = await prober
    ready_after, states = await wait_ready(catalog_dsn, tag, n, limit_s=900 if workers else 0.0)
    stop.set()
    await sampler
    return {
        "shape": f"paced {rate:g}/s" if rate is not None else "at once",
        "healthz_ms": summary(limit),
        "healthz_during_ms": summary(during),
        "catalog_commit_during_ms": summary(commits),
        "accepted_ms": summary(latencies),
        "server_202_within": {
            f"{float(le) * 1000:g} ms": f"{after[le] - before[le]:g}/{after['+Inf'] - before['+Inf']:g}"
            for le in ("0.05", "0.1", "0.25")
        },
        "not_202": sum(1 for s in statuses if s != 202),
        "ready_s": round(ready_after, 1),
        "states": states,
        "peak_connections": peak[0],
        "built_by": await builders(catalog_dsn, tag),
    }


def sizes(args: argparse.Namespace) -> dict[str, str]:
    """Pool sizes for two replicas on a 40-connection server (each replica's share is 18): the HTTP process of a
    replica with a builder process keeps 18 - 9 lent to the builder, which holds its catalog pool (3) and admin pool
    (2) beside the 4 the budget leaves for other work. ``--defaults``: none set."""
    if args.defaults:
        return {}
    if args.builder == "process" and args.workers and not args.split:
        return {"TENANTS_POOL_SIZE": "3", "TENANTS_MAX_PARALLEL": "1"}
    return {"TENANTS_POOL_SIZE": "6", "TENANTS_MAX_PARALLEL": "3", "TENANTS_TENANT_CONNECTIONS": "0"}


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="tenants-bench-queue-"))
    LimitedPostgres.limit = args.max_connections
    pg = LimitedPostgres(data / "pg", durable=True)
    dsn = pg.start()
    tag = uuid.uuid4().hex[:6]
    env = {
        "TENANTS_DATABASE_URL": dsn,
        "TENANTS_CATALOG_DATABASE": f"bench_{tag}",
        "TENANTS_DB_PREFIX": f"b{tag}_",
        "TENANTS_MIGRATIONS_DIR": str(ROOT / "migrations"),
        "TENANTS_QUEUE_WORKERS": str(args.workers),
        "TENANTS_QUEUE_BUILDER": args.builder,
        "TENANTS_LOG_LEVEL": "warning",
        **sizes(args),
    }
    # --split: replica 0 answers and only queues; replica 1 builds and answers nothing.
    split = [{"TENANTS_QUEUE_WORKERS": "0"}, {"TENANTS_QUEUE_BUILDER": "inline"}]
    roles: list[dict[str, str]] = split if args.split else [{}] * args.replicas
    replicas = [Service({**env, **role}, data / f"replica{i}.log") for i, role in enumerate(roles)]
    results = []
    try:
        for replica in replicas:
            await replica.start()
        urls = [replicas[0].url] if args.split else [r.url for r in replicas]
        catalog_dsn = with_database(dsn, f"bench_{tag}")
        if args.shapes in ("both", "paced"):
            results.append(await run_shape(urls, dsn, catalog_dsn, args.tenants, args.rate, "p", args.workers))
        if args.shapes in ("both", "once"):
            results.append(await run_shape(urls, dsn, catalog_dsn, args.tenants, None, "o", args.workers))
    finally:
        try:
            for replica in replicas:
                stop(replica)
        finally:
            pg.stop()
            shutil.rmtree(data, ignore_errors=True)  # 300 tenants x 2 shapes: gigabytes
    logs = "".join(r.log.read_text() for r in replicas)
    report = {
        "server": f"embedded (durable), max_connections={args.max_connections}",
        "tenants_per_shape": args.tenants,
        "replicas": "2: one answering and queueing, one building"
        if args.split
        else f"{args.replicas}, each answering and building (builder: {args.builder})",
        "settings": sizes(args),
        "connection_error_log_lines": sum(logs.count(e) for e in _ERRORS),
        "shapes": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second of the paced burst")
    parser.add_argument("--split", action="store_true", help="one replica answers, the other builds")
    parser.add_argument("--workers", type=int, default=2, help="TENANTS_QUEUE_WORKERS of each replica (0: only queue)")
    parser.add_argument("--builder", choices=["process", "inline"], default="process", help="TENANTS_QUEUE_BUILDER")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--defaults", action="store_true", help="no pool sizes set: the service's defaults")
    parser.add_argument("--shapes", choices=["both", "paced", "once"], default="both")
    asyncio.run(main(parser.parse_args()))
