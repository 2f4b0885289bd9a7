"""Latency of one drift check (GET /tenants/{id}/drift) of a tenant of the default history, interleaved.

Each round measures, in turn: the check of a clean tenant and of a drifted one through real HTTP (uvicorn on a
loopback port), and the floor of any implementation, reading the live snapshot alone on an open connection.
Before the rounds it times the first check ever (which builds every version's expected schema in a scratch
database) and, after them, the first check of a restarted service (which reads them back from the catalog).

    python -m bench.drift [--runs 20]            # embedded, durable cluster in a temp dir
    TENANTS_DATABASE_URL=postgresql://... python -m bench.drift

Prints medians; paste them into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
import httpx

from bench.harness import database_server, drop_databases, running_service, settings_for
from service.api.app import create_app
from service.config import Settings
from service.schema import snapshot
from service.schema.expected import ExpectedSchemas
from service.store.db import with_database


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed, response


async def after_restart(settings: Settings) -> float:
    """The first check of a new service instance whose memory is empty: expected schemas come from the catalog."""
    ExpectedSchemas.forget_memory()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            elapsed, _ = await timed_get(client, "/tenants/clean/drift")
            assert app.state.provisioner.drift.expected.builds == 0
            return elapsed


async def main(runs: int) -> None:
    tag = uuid.uuid4().hex[:6]
    clean_s: list[float] = []
    drifted_s: list[float] = []
    floor_s: list[float] = []
    async with database_server() as (dsn, version):
        settings = settings_for(dsn, tag)
        try:
            async with (
                running_service(settings) as url,
                httpx.AsyncClient(base_url=url, timeout=120) as client,
            ):
                for tenant in ("clean", "drifted"):
                    r = await client.post("/tenants", json={"id": tenant, "seed": {"admin_email": "a@b.test"}})
                    assert r.status_code == 201, r.text
                live = await asyncpg.connect(with_database(dsn, f"b{tag}_drifted"))
                await live.execute("ALTER TABLE invoices DROP COLUMN sent_at; DROP INDEX sessions_project_id_idx")
                cold, _ = await timed_get(client, "/tenants/clean/drift")
                for _ in range(runs):  # interleaved: the machine's noise hits all three alike
                    elapsed, _ = await timed_get(client, "/tenants/clean/drift")
                    clean_s.append(elapsed)
                    elapsed, response = await timed_get(client, "/tenants/drifted/drift")
                    assert len(response.json()["differences"]) == 2
                    drifted_s.append(elapsed)
                    started = time.perf_counter()
                    await snapshot.read(live)
                    floor_s.append(time.perf_counter() - started)
                await live.close()
            restarted = await after_restart(settings)
        finally:
            await drop_databases(dsn, (f"b{tag}_clean", f"b{tag}_drifted", f"bench_{tag}"))
    print(f"server: {version}; runs: {runs}; default history (11 files)")
    print(f"first check ever (builds 12 expected schemas)  {cold * 1000:7.1f} ms")
    print(f"first check after a restart (from catalog)     {restarted * 1000:7.1f} ms")
    for label, samples in (
        ("GET drift, clean tenant (HTTP)", clean_s),
        ("GET drift, drifted tenant (HTTP)", drifted_s),
        ("snapshot.read alone (floor)", floor_s),
    ):
        ms = [s * 1000 for s in samples]
        print(f"{label:<34} median {statistics.median(ms):6.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(max(parser.parse_args().runs, 20)))
