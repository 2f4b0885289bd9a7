"""Fleet-scale figures: a rollout over N tenants against an in-process asyncpg loop doing the same upgrade at the
same concurrency (interleaved), read latency under a fixed request rate, and resident memory vs catalog size.

    python -m bench.fleet [--tenants 1000] [--rounds 3] [--rate 200] [--seconds 10]
    TENANTS_DATABASE_URL=postgresql://... python -m bench.fleet

The service runs as a real process (`python -m service serve`); the load generator runs here, open-loop: requests
start on a fixed schedule whatever the answers' latency, so a slow server shows up as latency, not as fewer
requests. Tenants use a two-file history so that a thousand of them are made in seconds; every measured rollout
applies one more file to all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from service.history import migrations, runner
from service.history import table as history
from service.history.migrations import plan
from service.identifiers import quote_ident
from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "tests" / "fixtures" / "migrations" / "ok"


class Service:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server lives on
                [sys.executable, "-m", "service", "serve", "--port", str(port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)

    def cpu_seconds(self) -> float:
        """CPU time the service process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far (all processes: the service, PostgreSQL, this loop)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def checkpoint(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def add_file(folder: Path, version: int) -> str:
    sql = f'ALTER TABLE "accounts" ADD COLUMN "c{version}" integer DEFAULT {version};\n'
    (folder / f"{version:04d}_c{version}.sql").write_text(sql)
    return sql


async def create_tenants(url: str, n: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one(i: int) -> None:
            async with sem:
                r = await client.post("/tenants", json={"id": f"f{i}"})
                assert r.status_code in (200, 201), r.text

        await asyncio.gather(*(one(i) for i in range(n)))


async def service_rollout(
    service: Service, dsn: str, catalog: str, concurrency: int, tenants: int
) -> tuple[float, float, float, float]:
    """Seconds until the rollout ends, the machine's CPU seconds meanwhile, and seconds until every tenant's drift
    re-check after it is recorded.

    The progress is polled through the rollout list, which leaves out the per-tenant items: a dashboard that polled
    ``GET /rollouts/{id}`` (1,000 items) 50 times a second would itself take a good part of a core."""
    async with httpx.AsyncClient(base_url=service.url, timeout=300) as client:
        started, cpu, own = time.perf_counter(), cpu_seconds(), service.cpu_seconds()
        r = await client.post("/rollouts", json={"concurrency": concurrency, "canary": 0, "max_failures": 0})
        assert r.status_code == 202, r.text
        rid, target = r.json()["id"], r.json()["to_version"]
        while True:
            body = (await client.get("/rollouts", params={"limit": 1})).json()["items"][0]
            assert body["id"] == rid
            if body["state"] != "running":
                break
            await asyncio.sleep(0.1)
        elapsed, cpu, own = time.perf_counter() - started, cpu_seconds() - cpu, service.cpu_seconds() - own
        assert (body["state"], body["done"]) == ("succeeded", tenants), body
    conn = await asyncpg.connect(with_database(dsn, catalog))
    try:
        query = "SELECT count(DISTINCT tenant_id) FROM drift_checks WHERE version = $1 AND clean"
        while True:
            if await conn.fetchval(query, target) >= tenants:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return elapsed, cpu, own, time.perf_counter() - started


async def loop_upgrade(
    dsn: str, databases: list[str], folder: Path, version: int, concurrency: int, *, same_sql: bool
) -> float:
    """The physical limit: per tenant, connect, one transaction with the file and its history row, commit.

    With ``same_sql`` the tenant-side SQL is exactly the service's (``history.read``, then ``runner.apply``: the
    history checked before, a savepoint to locate a failing statement, the history row), with no catalog, no lock
    and no HTTP: what is left between the two is the service's orchestration. Without it, the least any runner
    could send (no history read, one plain insert)."""
    sem = asyncio.Semaphore(concurrency)
    migration = migrations.load(folder).by_version[version]
    sql = "\n;\n".join(s.sql for s in migration.statements)
    sha = migration.sha256

    async def one(db: str) -> None:
        async with sem:
            conn = await asyncpg.connect(with_database(dsn, db))
            try:
                if same_sql:
                    applied = await history.read(conn)
                    await runner.apply(conn, plan([migration]), ensure_history=not applied)
                    return
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO _tenants.history (version, name, file, sha256, drizzle_hash, duration_ms)"
                        " VALUES ($1, $2, $3, $4, $5, 0)",
                        version,
                        f"c{version}",
                        f"{version:04d}_c{version}.sql",
                        sha,
                        sha,
                    )
            finally:
                await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(db) for db in databases))
    return time.perf_counter() - started


async def load(url: str, paths: list[str], rate: int, seconds: float) -> dict[str, float]:
    """Open-loop load: one request every 1/rate s, cycling through ``paths``; latency percentiles in ms."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(path: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            r = await client.get(path)
            latencies.append((time.perf_counter() - started) * 1000)
            if r.status_code != 200:
                errors += 1

        tasks = []
        begin = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(paths[i % len(paths)])))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - begin
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "rps": len(latencies) / wall,
        "errors": errors,
    }


async def warm(url: str, paths: list[str]) -> None:
    """Read each path once, eight at a time (not measured)."""
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(path: str) -> None:
            async with gate:
                assert (await client.get(path)).status_code == 200

        await asyncio.gather(*(one(p) for p in paths))


async def fake_catalog_rows(dsn: str, catalog: str, n: int) -> None:
    """Catalog rows only (no databases): what the service holds in memory does not depend on them existing."""
    conn = await asyncpg.connect(with_database(dsn, catalog))
    try:
        await conn.execute(
            """INSERT INTO tenants (id, name, database, state, request_sha256, version)
               SELECT 'm' || g, 'm' || g, 'fake_m' || g, 'ready', '', 1 FROM generate_series(1, $1) g
               ON CONFLICT DO NOTHING""",
            n,
        )
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="tenants-fleet-"))
    embedded = None
    dsn = os.environ.get("TENANTS_DATABASE_URL")
    if not dsn:
        embedded = EmbeddedPostgres(work / "pg", durable=True)
        dsn = embedded.start()
    tag = uuid.uuid4().hex[:6]
    folder = work / "migrations"
    shutil.copytree(BASE, folder)
    env = {
        "TENANTS_DATABASE_URL": dsn,
        "TENANTS_MIGRATIONS_DIR": str(folder),
        "TENANTS_CATALOG_DATABASE": f"fleet_{tag}",
        "TENANTS_DB_PREFIX": f"f{tag}_",
        "TENANTS_LOG_LEVEL": "warning",
        "TENANTS_POOL_SIZE": "40",
        "TENANTS_MAX_PARALLEL": str(args.concurrency),
    }
    results: dict[str, Any] = {}
    service = Service(env, work / "service.log")
    try:
        await service.start()
        started = time.perf_counter()
        await create_tenants(service.url, args.tenants, args.concurrency)
        results["create_s"] = time.perf_counter() - started
        databases = [f"f{tag}_f{i}" for i in range(args.tenants)]
        ours: list[float] = []
        checked: list[float] = []
        limit: list[float] = []
        bare: list[float] = []
        cpu_ours: list[float] = []
        cpu_loop: list[float] = []
        cpu_service: list[float] = []
        cpu_loop_own: list[float] = []
        version = 2
        catalog = f"fleet_{tag}"
        phases = ["service", "loop", "bare"]
        for round_ in range(args.rounds):
            # Interleaved, and each round starts with another one; every phase starts after a checkpoint, so that
            # none pays for the writes of the one before it (a thousand CREATE DATABASE fill the WAL).
            for phase in phases[round_ % 3 :] + phases[: round_ % 3]:
                await checkpoint(dsn)
                if phase == "service":
                    service.stop()
                    add_file(folder, version)
                    await service.start()
                    rollout, cpu, own, with_drift = await service_rollout(
                        service, dsn, catalog, args.concurrency, args.tenants
                    )
                    ours.append(rollout)
                    cpu_ours.append(cpu)
                    cpu_service.append(own)
                    checked.append(with_drift)
                elif phase == "loop":
                    add_file(folder, version)
                    cpu, mine = cpu_seconds(), time.process_time()
                    limit.append(await loop_upgrade(dsn, databases, folder, version, args.concurrency, same_sql=True))
                    cpu_loop.append(cpu_seconds() - cpu)
                    cpu_loop_own.append(time.process_time() - mine)
                else:
                    add_file(folder, version)
                    bare.append(await loop_upgrade(dsn, databases, folder, version, args.concurrency, same_sql=False))
                version += 1
        results["rollout_s"] = ours
        results["checked_s"] = checked
        results["loop_s"] = limit
        results["bare_s"] = bare
        results["cpu_ours"] = cpu_ours
        results["cpu_loop"] = cpu_loop
        results["cpu_service"] = cpu_service
        results["cpu_loop_own"] = cpu_loop_own
        # the loop's files are on disk and in every tenant's history: restart so the service knows them.
        service.stop()
        await service.start()
        paths = [f"/tenants/f{i}/schema" for i in range(args.tenants)]
        results["schema"] = await load(service.url, paths, args.rate, args.seconds)
        # A working set that fits the service's tenant-connection cache (TENANTS_TENANT_CONNECTIONS), read once
        # before (a dashboard's steady state: its first reads open the connections).
        await warm(service.url, paths[: args.hot])
        results["schema_hot"] = await load(service.url, paths[: args.hot], args.rate, args.seconds)
        results["fleet"] = await load(service.url, ["/fleet"], args.rate, args.seconds)
        # Every tenant again, with levels answered from memory (TENANTS_SCHEMA_CACHE_SECONDS), once each was read.
        service.stop()
        cached = Service({**env, "TENANTS_SCHEMA_CACHE_SECONDS": "30"}, work / "service.log")
        await cached.start()
        try:
            await warm(cached.url, paths)
            results["schema_cached"] = await load(cached.url, paths, args.rate, args.seconds)
        finally:
            cached.stop()
        await service.start()
        results["rss_1000"] = service.rss_mib()
        await fake_catalog_rows(dsn, f"fleet_{tag}", 10_000 - args.tenants)
        await load(service.url, ["/fleet", "/tenants?limit=500"], 50, 2)
        results["rss_10000"] = service.rss_mib()
        results["fleet_10000"] = await load(service.url, ["/fleet"], args.rate, args.seconds)
    finally:
        service.stop()
        admin = await asyncpg.connect(dsn)
        try:
            for name in [*(f"f{tag}_f{i}" for i in range(args.tenants)), f"fleet_{tag}"]:
                await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            for name in (f"f{tag}_f{i}" for i in range(args.tenants)):
                await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
        finally:
            await admin.close()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    n, c = args.tenants, args.concurrency
    ours, limit = statistics.median(r["rollout_s"]), statistics.median(r["loop_s"])
    print(f"tenants: {n}; concurrency: {c}; rounds: {args.rounds}; created in {r['create_s']:.1f} s")
    print(f"rollout of one file (service)   median {ours:6.2f} s  runs {[round(x, 2) for x in r['rollout_s']]}")
    drift = statistics.median(r["checked_s"])
    print(f"... and its drift re-checks     median {drift:6.2f} s  runs {[round(x, 2) for x in r['checked_s']]}")
    bare = statistics.median(r["bare_s"])
    print(f"asyncpg loop, the service's SQL median {limit:6.2f} s  runs {[round(x, 2) for x in r['loop_s']]}")
    print(f"asyncpg loop, least SQL         median {bare:6.2f} s  runs {[round(x, 2) for x in r['bare_s']]}")
    cpu_ours, cpu_loop = statistics.median(r["cpu_ours"]), statistics.median(r["cpu_loop"])
    own, loop_own = statistics.median(r["cpu_service"]), statistics.median(r["cpu_loop_own"])
    print(
        f"CPU per tenant (whole machine)  service {cpu_ours / n * 1000:.1f} ms (its own process"
        f" {own / n * 1000:.1f} ms), loop {cpu_loop / n * 1000:.1f} ms (its own process {loop_own / n * 1000:.1f} ms)"
    )
    print(
        f"ratio service/loop              {ours / limit:.2f}x (against the loop with the least SQL {ours / bare:.2f}x)"
    )
    for name in ("schema", "schema_hot", "schema_cached", "fleet", "fleet_10000"):
        x = r[name]
        print(
            f"GET {name:12s} at {args.rate} rps: p50 {x['p50']:6.2f} ms  p99 {x['p99']:6.2f} ms  "
            f"achieved {x['rps']:.0f} rps  errors {x['errors']}"
        )
    print(f"service RSS: {r['rss_1000']:.1f} MiB with {n} tenants, {r['rss_10000']:.1f} MiB with 10000")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--hot", type=int, default=40, help="tenants in the cache-sized working set")
    asyncio.run(main(parser.parse_args()))
