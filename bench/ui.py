"""Time to first byte of the console's pages with 10,000 tenants in the catalog, against the floor under them.

    python -m bench.ui [--tenants 10000] [--requests 200]
    TENANTS_DATABASE_URL=postgresql://... python -m bench.ui

The catalog gets its rows directly (as bench.fleet does for its 10,000-tenant reads: no tenant databases, the pages
read the catalog only): tenants spread over the default history's versions, one drift check each (1 % drifted), 1 %
failed, and one finished rollout over all of them. The service runs under uvicorn on loopback with
``TENANTS_FLEET_CACHE_SECONDS=0``, so every ``/ui`` runs the fleet aggregate; a second one on the same catalog keeps
the default (1 s: the aggregate serves every caller for a second). Interleaved, one request at a time, each page
in turn:

- the pages: ``/ui`` on both, ``/ui/tenants`` (first page by id), ``/ui/tenants?status=drifted`` (a status filter judges
  every row), ``/ui/tenants?sort=updated&order=desc&page=100``;
- the floor: ``GET /healthz`` (HTTP and the app's middleware, nothing else), and the SQL each page sends, timed
  from this process on a connection of its own (what the catalog's server needs).

TTFB is the time until the answer's headers arrive; the pages render before they send them, so it is the page time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

from bench.harness import database_server, drop_databases, running_service, settings_for
from service.config import Settings
from service.fleet import rollout_store
from service.history import migrations
from service.store import catalog
from service.store.db import with_database
from service.store.listing import Browse, browse

PAGES = {
    "/ui": "/ui",
    "/ui, default TENANTS_FLEET_CACHE_SECONDS (1 s)": "cached:/ui",
    "/ui/tenants": "/ui/tenants",
    "/ui/tenants?status=drifted": "/ui/tenants?status=drifted",
    "/ui/tenants?sort=updated&order=desc&page=100": "/ui/tenants?sort=updated&order=desc&page=100",
    "/healthz (HTTP floor)": "/healthz",
}


async def fill(conn: asyncpg.Connection, n: int, latest: int) -> None:
    """Catalog rows only: tenants over versions 0..latest, a drift check each, one finished rollout over all."""
    await conn.execute(
        """INSERT INTO tenants (id, name, database, state, request_sha256, version, error, updated_at)
           SELECT 'u' || lpad(g::text, 5, '0'), 'tenant ' || g, 'fake_u' || g,
                  CASE WHEN g % 100 = 1 THEN 'failed' ELSE 'ready' END, '', g % ($2 + 1),
                  CASE WHEN g % 100 = 1 THEN '{"code": "migration_failed", "message": "x"}'::jsonb END,
                  now() - make_interval(secs => g)
           FROM generate_series(1, $1) g""",
        n,
        latest,
    )
    await conn.execute(
        """INSERT INTO drift_checks (tenant_id, version, clean, differences)
           SELECT id, version, right(id, 2) <> '42',
                  CASE WHEN right(id, 2) = '42' THEN '[{"object": "table", "name": "public.x", "change": "unexpected",
                       "expected": null, "actual": {"kind": "table"}}]'::jsonb ELSE '[]'::jsonb END
           FROM tenants WHERE state = 'ready'"""
    )
    rollout = await conn.fetchval(
        """INSERT INTO rollouts (state, to_version, concurrency, canary, max_failures, actor, finished_at)
           VALUES ('succeeded', $1, 8, 5, 1, 'bench', now()) RETURNING id""",
        latest,
    )
    await conn.execute(
        """INSERT INTO rollout_tenants (rollout_id, position, tenant_id, canary, from_version, state, attempts,
                                        started_at, finished_at, duration_ms)
           SELECT $1, row_number() OVER (ORDER BY id), id, false, version, 'succeeded', 1, now(), now(), 12.5
           FROM tenants""",
        rollout,
    )
    await conn.execute("ANALYZE")


async def ttfb(client: httpx.AsyncClient, cached: httpx.AsyncClient, path: str) -> float:
    if path.startswith("cached:"):
        client, path = cached, path.removeprefix("cached:")
    started = time.perf_counter()
    async with client.stream("GET", path) as response:
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (path, response.status_code)
        await response.aread()
    return elapsed * 1000


def sql_floors(conn: asyncpg.Connection, latest: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The catalog statements each page sends, as the service sends them."""
    return {
        "/ui": lambda: _all(catalog.fleet(conn, latest), rollout_store.page(conn, before=None, limit=5)),
        "/ui/tenants": lambda: browse(conn, Browse(), latest),
        "/ui/tenants?status=drifted": lambda: browse(conn, Browse(status="drifted"), latest),
        "/ui/tenants?sort=updated&order=desc&page=100": lambda: browse(
            conn, Browse(sort="updated", descending=True, offset=99 * 50), latest
        ),
    }


async def _all(*steps: Awaitable[Any]) -> None:
    for step in steps:  # one connection: one statement after the other, as a page does
        await step


async def measure(
    bases: tuple[str, str], dsn: str, catalog_db: str, latest: int, requests: int
) -> dict[str, dict[str, float]]:
    page_ms: dict[str, list[float]] = {name: [] for name in PAGES}
    conn = await asyncpg.connect(with_database(dsn, catalog_db))
    try:
        floors = sql_floors(conn, latest)
        sql_ms: dict[str, list[float]] = {name: [] for name in floors}
        async with (
            httpx.AsyncClient(base_url=bases[0], timeout=30) as client,
            httpx.AsyncClient(base_url=bases[1], timeout=30) as cached,
        ):
            for path in PAGES.values():  # warm: templates compiled, plans cached, pages in shared buffers
                for _ in range(5):
                    await ttfb(client, cached, path)
            for _ in range(requests):
                for name, path in PAGES.items():
                    page_ms[name].append(await ttfb(client, cached, path))
                    if name in floors:
                        started = time.perf_counter()
                        await floors[name]()
                        sql_ms[name].append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return {
        name: {
            "p50": statistics.median(values),
            "p90": statistics.quantiles(values, n=10)[-1],
            "sql_p50": statistics.median(sql_ms[name]) if name in sql_ms else float("nan"),
        }
        for name, values in page_ms.items()
    }


async def main(args: argparse.Namespace) -> None:
    tag = uuid.uuid4().hex[:6]
    async with database_server() as (dsn, description):
        settings = settings_for(dsn, tag).model_copy(update={"fleet_cache_seconds": 0.0})
        latest = settings_latest(settings)
        try:
            # Two services on the same catalog: one answering every /ui with a fresh aggregate, one as configured by
            # default (the aggregate serves every caller for a second).
            ttl = Settings.model_fields["fleet_cache_seconds"].default
            default = settings.model_copy(update={"fleet_cache_seconds": ttl})
            async with running_service(settings) as base, running_service(default) as cached:
                conn = await asyncpg.connect(with_database(dsn, settings.catalog_database))
                try:
                    await fill(conn, args.tenants, latest)
                finally:
                    await conn.close()
                results = await measure((base, cached), dsn, settings.catalog_database, latest, args.requests)
        finally:
            await drop_databases(dsn, [settings.catalog_database])
    print(f"server: {description}; {args.tenants} tenants; {args.requests} requests per page, interleaved")
    print("| page | TTFB p50 | p90 | its SQL alone, p50 |")
    print("|---|---|---|---|")
    for name, r in results.items():
        sql = "" if r["sql_p50"] != r["sql_p50"] else f"{r['sql_p50']:.1f} ms"
        print(f"| `{name}` | **{r['p50']:.1f} ms** | {r['p90']:.1f} ms | {sql} |")


def settings_latest(settings: Settings) -> int:
    latest = migrations.load(settings.migrations_dir, settings.seeds_path).latest_version
    assert latest is not None
    return latest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
