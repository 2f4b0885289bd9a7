"""``POST /tenants`` with ``"strategy": "replay"`` and ``"clone"``, against in-process asyncpg limits, interleaved.

Limits (the least work any implementation must do for the same tenant, no catalog, no HTTP, no locks):

- replay limit: the SQL of ``bench.provision.limit_once`` (CREATE DATABASE from template0, every file in its chain
  segments, history rows, seed) plus the same role work as the service (CREATE ROLE with a SCRAM verifier,
  CONNECT on the database, grants on schema ``public``);
- clone limit: a bare ``CREATE DATABASE … TEMPLATE <the service's template>`` plus that same role work;
- clone limit + seed: the clone limit and the seed transaction a cloned tenant needs (history rows marked
  ``cloned``, settings, seed files), to show what the seed costs.

Also: ``STRATEGY WAL_LOG`` against ``FILE_COPY`` for a bare clone of the template (PostgreSQL 15+), one at a time
and 8 at once; and throughput in tenants per minute at concurrency 1, 4 and 8, each mode run in turn, for
``--rounds`` rounds, medians. The service is a real process (``python -m service serve``, ``TENANTS_MAX_PARALLEL=8``
so that concurrency 8 reaches the server, logs at ``warning``); the load generator and the limits run here.

    python -m bench.clone [--runs 15] [--rounds 3] [--tenants 16]     # embedded, durable cluster in a temp dir
    TENANTS_DATABASE_URL=postgresql://... python -m bench.clone

Prints the figures for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.fleet import Service
from bench.provision import limit_once
from service.history import migrations, runner
from service.identifiers import quote_ident
from service.schema.template import CLONE_STRATEGY, template_prefix
from service.store.db import with_database
from service.store.embedded import EmbeddedPostgres
from service.tenants import credentials, roles

ROOT = Path(__file__).resolve().parent.parent


class Bench:
    def __init__(self, dsn: str, ms: migrations.MigrationSet, client: httpx.AsyncClient, tag: str) -> None:
        self.dsn = dsn
        self.tag = tag
        self.ms = ms
        self.client = client
        self.template = ""
        self.strategy = ""
        self.counter = 0
        self.made: list[str] = []  # limit databases and roles (same names) still to drop
        self.tenants: list[str] = []  # service tenants still to delete

    def fresh(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}{self.tag}_{self.counter}"

    # -- the service ---------------------------------------------------------------------------------------

    async def post(self, strategy: str) -> float:
        tenant = self.fresh("s")
        started = time.perf_counter()
        r = await self.client.post(
            "/tenants", json={"id": tenant, "seed": {"admin_email": "a@b.test"}, "strategy": strategy}
        )
        elapsed = time.perf_counter() - started
        assert r.status_code == 201, r.text
        self.tenants.append(tenant)
        return elapsed

    # -- the limits ----------------------------------------------------------------------------------------

    async def role_work(self, admin: asyncpg.Connection, name: str) -> None:
        await roles.create(admin, name, credentials.new_password())

    async def grants(self, admin: asyncpg.Connection, name: str) -> None:
        await roles.grant_connect(admin, name, name)
        tconn = await asyncpg.connect(with_database(self.dsn, name))
        try:
            await roles.grant_objects(tconn, name)
        finally:
            await tconn.close()

    async def replay_limit(self) -> float:
        name = self.fresh("lr")
        self.made.append(name)
        started = time.perf_counter()
        admin = await asyncpg.connect(self.dsn)
        try:
            await self.role_work(admin, name)
            await limit_once(self.dsn, self.ms, name)
            await self.grants(admin, name)
        finally:
            await admin.close()
        return time.perf_counter() - started

    async def clone_limit(self, *, seed: bool = False, strategy: str | None = None) -> float:
        name = self.fresh("lc")
        self.made.append(name)
        clause = self.strategy if strategy is None else strategy
        started = time.perf_counter()
        admin = await asyncpg.connect(self.dsn)
        try:
            await self.role_work(admin, name)
            await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(self.template)}{clause}")
            await roles.grant_connect(admin, name, name)
            tconn = await asyncpg.connect(with_database(self.dsn, name))
            try:
                if seed:
                    values = runner.SeedValues(name, name, {"admin_email": "a@b.test"})
                    await runner.seed_cloned(tconn, self.ms.seeds, values)
                await roles.grant_objects(tconn, name)
            finally:
                await tconn.close()
        finally:
            await admin.close()
        return time.perf_counter() - started

    async def bare_clone(self, strategy: str) -> float:
        name = self.fresh("lb")
        self.made.append(name)
        admin = await asyncpg.connect(self.dsn)
        try:
            started = time.perf_counter()
            await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(self.template)}{strategy}")
            return time.perf_counter() - started
        finally:
            await admin.close()

    # -- clean up (never timed) ----------------------------------------------------------------------------

    async def clean(self) -> None:
        sem = asyncio.Semaphore(8)

        async def delete(tenant: str) -> None:
            async with sem:
                r = await self.client.delete(f"/tenants/{tenant}", params={"confirm": tenant})
                assert r.status_code == 204, r.text

        await asyncio.gather(*(delete(t) for t in self.tenants))
        self.tenants.clear()
        admin = await asyncpg.connect(self.dsn)
        try:
            for name in self.made:
                await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")
            # Every measurement starts with nothing dirty: no checkpoint left to pay for the previous one.
            await admin.execute("CHECKPOINT")
        finally:
            await admin.close()
        self.made.clear()


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Rate:
    per_minute: float
    busy: float  # share of the machine's CPUs in use during the measurement
    python_ms: float  # CPU ms per tenant of the Python process doing the work (the service, or this loop)


async def throughput(n: int, concurrency: int, one: Callable[[], Awaitable[float]], pid: int) -> Rate:
    """Tenants per minute: ``n`` made, ``concurrency`` at a time; ``pid`` is the process doing the work."""
    sem = asyncio.Semaphore(concurrency)

    async def run() -> None:
        async with sem:
            await one()

    busy0, total0 = machine_cpu()
    cpu0 = process_cpu(pid)
    started = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(n)))
    elapsed = time.perf_counter() - started
    busy1, total1 = machine_cpu()
    python_ms = (process_cpu(pid) - cpu0) / n * 1000
    return Rate(n / elapsed * 60, (busy1 - busy0) / max(total1 - total0, 1e-9), python_ms)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms (min {min(values) * 1000:.1f})"


async def latency(bench: Bench, runs: int) -> None:
    print("\n# latency, one at a time (interleaved medians)")
    lat: dict[str, list[float]] = {k: [] for k in ("replay", "replay limit", "clone", "clone limit", "seeded")}
    for i in range(runs):
        lat["replay"].append(await bench.post("replay"))
        lat["replay limit"].append(await bench.replay_limit())
        lat["clone"].append(await bench.post("clone"))
        lat["clone limit"].append(await bench.clone_limit())
        lat["seeded"].append(await bench.clone_limit(seed=True))
        if i % 5 == 4:
            await bench.clean()
    await bench.clean()
    print(f"POST /tenants replay        {ms(lat['replay'])}")
    print(f"replay limit (+ role)       {ms(lat['replay limit'])}")
    print(f"POST /tenants clone         {ms(lat['clone'])}")
    print(f"clone limit (bare + role)   {ms(lat['clone limit'])}")
    print(f"clone limit + seed          {ms(lat['seeded'])}")
    med = {k: statistics.median(v) for k, v in lat.items()}
    print(f"ratio replay/limit {med['replay'] / med['replay limit']:.2f}x (target <= 1.25x)")
    print(f"ratio clone/bare   {med['clone'] / med['clone limit']:.2f}x (target <= 2x)")
    print(f"ratio clone/seeded {med['clone'] / med['seeded']:.2f}x")
    print(f"clone speed-up over replay {med['replay'] / med['clone']:.1f}x")


async def throughputs(bench: Bench, service: Service, rounds: int, tenants: int, levels: list[int]) -> None:
    print(f"\n# throughput, tenants/minute ({tenants} tenants per measurement, median of {rounds} rounds)")
    assert service.proc is not None
    modes: dict[str, tuple[Callable[[], Awaitable[float]], int]] = {
        "HTTP replay": (lambda: bench.post("replay"), service.proc.pid),
        "limit replay": (bench.replay_limit, os.getpid()),
        "HTTP clone": (lambda: bench.post("clone"), service.proc.pid),
        "limit clone": (bench.clone_limit, os.getpid()),
        "limit clone+seed": (lambda: bench.clone_limit(seed=True), os.getpid()),
    }
    for c in levels:
        found: dict[str, list[Rate]] = {k: [] for k in modes}
        order = list(modes)
        for turn in range(rounds):
            for mode in order[turn % len(order) :] + order[: turn % len(order)]:  # each round starts elsewhere
                one, pid = modes[mode]
                found[mode].append(await throughput(tenants, c, one, pid))
                await bench.clean()
        if os.environ.get("BENCH_VERBOSE"):
            for mode, rates in found.items():
                print(f"c={c} {mode:17} rounds: " + " ".join(f"{r.per_minute:.0f}" for r in rates))
        med = {k: statistics.median(r.per_minute for r in v) for k, v in found.items()}
        best = {k: max(r.per_minute for r in v) for k, v in found.items()}
        for mode, rates in found.items():
            busy = statistics.median(r.busy for r in rates)
            python_ms = statistics.median(r.python_ms for r in rates)
            print(
                f"c={c} {mode:17} {med[mode]:6.0f}/min (best {best[mode]:5.0f})  machine CPU {busy:4.0%}  "
                f"Python CPU {python_ms:5.1f} ms/tenant"
            )
        pairs = (("replay", "limit replay"), ("clone", "limit clone"), ("clone", "limit clone+seed"))
        for kind, limit in pairs:
            h = med[f"HTTP {kind}"]
            print(f"c={c} HTTP {kind} / {limit}: {h / med[limit]:.0%} of median, {h / best[limit]:.0%} of best")


async def main(runs: int, rounds: int, tenants: int, sections: set[str], levels: list[int]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tenants-bench-"))
    embedded = None
    dsn = os.environ.get("TENANTS_DATABASE_URL")
    if not dsn:
        embedded = EmbeddedPostgres(tmp / "pg", durable=True)
        dsn = embedded.start()
    tag = uuid.uuid4().hex[:6]
    catalog = f"bench_{tag}"
    env = {
        "TENANTS_DATABASE_URL": dsn,
        "TENANTS_MIGRATIONS_DIR": str(ROOT / "migrations"),
        "TENANTS_CATALOG_DATABASE": catalog,
        "TENANTS_DB_PREFIX": f"b{tag}_",
        "TENANTS_MAX_PARALLEL": "8",
        "TENANTS_POOL_SIZE": "16",
        "TENANTS_LOG_LEVEL": "warning",
    }
    service = Service(env, tmp / "service.log")
    await service.start()
    ms_set = migrations.load(ROOT / "migrations")
    admin = await asyncpg.connect(dsn)
    version = await admin.fetchval("SHOW server_version")
    version_num = int(await admin.fetchval("SHOW server_version_num"))
    await admin.close()
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=600) as client:
            bench = Bench(dsn, ms_set, client, tag)
            first_clone = await bench.post("clone")  # builds the template (and the expected schemas)
            admin = await asyncpg.connect(dsn)
            bench.template = await admin.fetchval(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", template_prefix(catalog)
            )
            await admin.close()
            bench.strategy = f" STRATEGY {CLONE_STRATEGY}" if version_num >= 150000 else ""
            await bench.post("replay")
            await bench.clean()
            print(f"server: {version} ({'embedded, durable' if embedded else 'TENANTS_DATABASE_URL'})")
            print(f"files: {len(ms_set.migrations)} + {len(ms_set.seeds)} seeds; template {bench.template}")
            print(f"first clone, building the template and the expected schemas: {first_clone * 1000:.0f} ms")

            if version_num >= 150000 and "strategy" in sections:
                print("\n# CREATE DATABASE … TEMPLATE <tpl>: WAL_LOG vs FILE_COPY (bare, interleaved)")
                times: dict[str, list[float]] = {"WAL_LOG": [], "FILE_COPY": []}
                for _ in range(runs):
                    for strategy in times:
                        times[strategy].append(await bench.bare_clone(f" STRATEGY {strategy}"))
                await bench.clean()
                for strategy, values in times.items():
                    print(f"{strategy:9} one at a time  median {ms(values)}")
                for strategy in times:
                    clause = f" STRATEGY {strategy}"
                    per_minute = []
                    for _ in range(rounds):
                        rate = await throughput(tenants, 8, lambda c=clause: bench.bare_clone(c), os.getpid())
                        per_minute.append(rate.per_minute)
                        await bench.clean()
                    print(f"{strategy:9} 8 at once      {statistics.median(per_minute):7.0f} databases/min")

            if "latency" in sections:
                await latency(bench, runs)
            if "throughput" in sections:
                await throughputs(bench, service, rounds, tenants, levels)
    finally:
        service.stop()
        admin = await asyncpg.connect(dsn)
        for row in await admin.fetch("SELECT datname FROM pg_database WHERE strpos(datname, $1) > 0", tag):
            await admin.execute(f"ALTER DATABASE {quote_ident(row['datname'])} WITH IS_TEMPLATE false")
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(row['datname'])} WITH (FORCE)")
        for row in await admin.fetch("SELECT rolname FROM pg_roles WHERE strpos(rolname, $1) > 0", tag):
            await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(row['rolname'])}")
        await admin.close()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=16)
    parser.add_argument("--sections", default="strategy,latency,throughput", help="comma-separated subset")
    parser.add_argument("--concurrency", default="1,4,8", help="throughput at these concurrency levels")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    asyncio.run(main(args.runs, args.rounds, args.tenants, set(args.sections.split(",")), levels))
