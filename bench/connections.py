"""``GET /tenants/{id}/schema`` under a fixed request rate, with and without the tenant-connection cache.

    python -m bench.connections [--tenants 40 200] [--rate 200] [--seconds 8]
    TENANTS_DATABASE_URL=postgresql://... python -m bench.connections

The service runs as a real process; the load is open-loop (bench.fleet.load), cycling through the tenants in
order, which is the cache's worst case once there are more tenants than ``TENANTS_TENANT_CONNECTIONS``: a
least-recently-used cache then never hits. Each configuration is warmed for two seconds at half the rate first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from bench.fleet import BASE, Service, create_tenants, load
from service.store.embedded import EmbeddedPostgres


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="tenants-connections-"))
    embedded = None
    dsn = os.environ.get("TENANTS_DATABASE_URL")
    if not dsn:
        embedded = EmbeddedPostgres(work / "pg", durable=False)  # reads only: durability changes nothing here
        dsn = embedded.start()
    tag = uuid.uuid4().hex[:6]
    env = {
        "TENANTS_DATABASE_URL": dsn,
        "TENANTS_MIGRATIONS_DIR": str(BASE),
        "TENANTS_CATALOG_DATABASE": f"conn_{tag}",
        "TENANTS_DB_PREFIX": f"c{tag}_",
        "TENANTS_LOG_LEVEL": "warning",
        "TENANTS_POOL_SIZE": "40",
        "TENANTS_MAX_PARALLEL": "8",
    }
    try:
        service = Service(env, work / "create.log")
        await service.start()
        try:
            await create_tenants(service.url, max(args.tenants), 8)
        finally:
            service.stop()
        for n in args.tenants:
            for cache in args.cache:
                service = Service({**env, "TENANTS_TENANT_CONNECTIONS": str(cache)}, work / f"{n}_{cache}.log")
                await service.start()
                try:
                    paths = [f"/tenants/f{i}/schema" for i in range(n)]
                    await load(service.url, paths, args.rate // 2, 2)
                    r = await load(service.url, paths, args.rate, args.seconds)
                finally:
                    service.stop()
                print(
                    f"{n:5d} tenants, cache {cache:4d}: p50 {r['p50']:8.2f} ms  p99 {r['p99']:8.2f} ms  "
                    f"achieved {r['rps']:.0f} rps  errors {r['errors']}",
                    flush=True,
                )
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, nargs="+", default=[40, 200])
    parser.add_argument("--cache", type=int, nargs="+", default=[0, 50])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8)
    asyncio.run(main(parser.parse_args()))
