"""How each configured server is doing: its tenants (catalog) and a health check of its own."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.store import catalog, lifecycle
from service.store.db import Conn, Servers


@dataclass(frozen=True, slots=True)
class ServerState:
    name: str
    capacity: int | None
    tenants: int
    healthy: bool
    version: str | None
    error: str | None
    draining: bool = False


async def states(servers: Servers) -> list[ServerState]:
    """Every configured server with its tenant count (catalog) and a health check of its own, all at once."""
    async with servers.catalog.catalog() as conn:
        counts = await catalog.count_by_server(conn)
        draining = await lifecycle.draining(conn)
    healths = await asyncio.gather(*(t.health() for t in servers))
    return [
        ServerState(t.name, t.capacity, counts.get(t.name, 0), h.healthy, h.version, h.error, t.name in draining)
        for t, h in zip(servers, healths, strict=True)
    ]


async def unconfigured(conn: Conn, servers: Servers) -> dict[str, int]:
    """Servers the catalog has tenants on but the settings do not name: those tenants are unreachable."""
    return {name: n for name, n in (await catalog.count_by_server(conn)).items() if servers.get(name) is None}
