"""Rollouts of moves: drain a server, rebalance the fleet. Each is a rollout (kind ``drain`` or ``rebalance``) driven
by the rollout machinery (:mod:`service.fleet.rollout_driver`): ``concurrency`` tenants at a time, stopping once
more than ``max_failures`` failed, resumed by any process after its driver died, each tenant's result (where it
went, or why it did not) in the rollout's items.

- **Drain**: the server is marked draining (a ``drains`` row: placement skips it, at once) and its ready tenants
  are moved, each to where placement would put a new tenant. Tenants that land on it meanwhile (created as the drain
  started, a move undone) are added before the drain ends. ``undrain`` removes the mark and cancels the drain (the
  moves in flight finish). A drain again after it ended (failed, or succeeded and a tenant came back) is a new one.
- **Rebalance**: the moves are planned when it starts: from the server with the most tenants to the one with the
  fewest (with room, not draining) until they differ by at most one.
- **Per tenant** (:func:`move_one`): what a dead process left in flight on the tenant is finished or undone first
  (a killed driver's move), then a tenant already off its server counts as moved, else it is moved and waited for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import asyncpg

from service.errors import InvalidRequest, RolloutFinished, RolloutInProgress, RolloutNotFound, TenantNotFound
from service.fleet import move_store, rollout_store
from service.fleet.move_store import Drain
from service.fleet.rollout_store import Rollout
from service.store import audit, catalog, lifecycle
from service.store.db import UNIQUE_VIOLATION, Conn, sqlstate
from service.tenants import placement
from service.tenants.provisioner import Provisioner

if TYPE_CHECKING:
    from service.fleet.rollouts import Rollouts

log = logging.getLogger(__name__)


async def drain(rollouts: Rollouts, server: str, concurrency: int = 2, max_failures: int = 0) -> Drain:
    """Mark the server draining and start (or keep) the rollout that moves its tenants away.

    Raises UnknownServer, InvalidRequest (no other server would be left to take them), RolloutInProgress (an undrain
    of it is still finishing its moves)."""
    p = rollouts.provisioner
    placement.require(p.servers, server)
    try:
        async with p.server.catalog() as conn, conn.transaction():
            others = set(p.servers.names) - await lifecycle.draining(conn) - {server}
            if not others:
                raise InvalidRequest("no other server would be left to take its tenants", server=server)
            running = await move_store.running_drain(conn, server)
            if running is not None and running[1]:
                raise RolloutInProgress("the last undrain of this server is finishing its moves", rollout=running[0])
            rollout_id = (
                running[0] if running is not None else await _insert_drain(conn, server, concurrency, max_failures)
            )
            await lifecycle.mark_draining(conn, server, rollout_id)
    except asyncpg.PostgresError as exc:  # a drain of the same server started at the same moment
        if sqlstate(exc) != UNIQUE_VIOLATION:
            raise
        raise RolloutInProgress("a drain of this server is starting", server=server) from exc
    rollouts.kick(rollout_id)
    found = await _drain_of(rollouts, server)
    assert found is not None  # marked above; an undrain in between would leave it None
    return found


async def _insert_drain(conn: Conn, server: str, concurrency: int, max_failures: int) -> int:
    tenants = [t for t, _ in await move_store.on_server(conn, server)]
    return await _insert(conn, "drain", tenants, [None] * len(tenants), concurrency, max_failures, server=server)


async def _insert(
    conn: Conn,
    kind: rollout_store.Kind,
    tenants: list[str],
    to_servers: list[str | None],
    concurrency: int,
    max_failures: int,
    *,
    server: str | None = None,
) -> int:
    """A rollout of moves: no target version, no canaries (a move is verified before it switches)."""
    return await rollout_store.insert(
        conn,
        to_version=None,
        concurrency=concurrency,
        canary=0,
        max_failures=max_failures,
        actor=audit.actor.get(),
        tenants=[(t, None) for t in tenants],
        kind=kind,
        server=server,
        to_servers=to_servers,
    )


async def undrain(rollouts: Rollouts, server: str) -> None:
    """The server takes tenants again; its running drain is cancelled (the moves in flight finish). Raises
    UnknownServer."""
    p = rollouts.provisioner
    placement.require(p.servers, server)
    async with p.server.catalog() as conn:
        _, rollout_id = await lifecycle.end_drain(conn, server)
    if rollout_id is not None:
        with contextlib.suppress(RolloutFinished, RolloutNotFound):  # it had ended: nothing to stop
            await rollouts.cancel(rollout_id)


async def state(rollouts: Rollouts, server: str) -> tuple[Drain | None, int]:
    """The server's drain (None if it is not draining) and how many tenants are still on it. Raises UnknownServer."""
    placement.require(rollouts.provisioner.servers, server)
    found = await _drain_of(rollouts, server)
    async with rollouts.provisioner.server.catalog() as conn:
        left = (await catalog.count_by_server(conn)).get(server, 0)
    return found, left


async def _drain_of(rollouts: Rollouts, server: str) -> Drain | None:
    async with rollouts.provisioner.server.catalog() as conn:
        return (await move_store.drains(conn, server)).get(server)


async def drains(rollouts: Rollouts) -> dict[str, Drain]:
    """The servers marked draining, by name, with their drain's counts."""
    async with rollouts.provisioner.server.catalog() as conn:
        return await move_store.drains(conn)


async def rebalance(rollouts: Rollouts, concurrency: int = 2, max_failures: int = 0) -> Rollout:
    """Plan the moves that even tenant counts across the servers not draining, and start them as a rollout (one
    with nothing to move is born succeeded). Raises RolloutInProgress (a rebalance is running)."""
    p = rollouts.provisioner
    try:
        async with p.server.catalog() as conn, conn.transaction():
            draining = await lifecycle.draining(conn)
            capacity = {t.name: t.capacity for t in p.servers if t.name not in draining}
            moves = plan(await catalog.count_by_server(conn), await move_store.movable(conn), capacity)
            targets: list[str | None] = [s for _, s in moves]
            rollout_id = await _insert(conn, "rebalance", [t for t, _ in moves], targets, concurrency, max_failures)
    except asyncpg.PostgresError as exc:
        if sqlstate(exc) != UNIQUE_VIOLATION:
            raise
        raise RolloutInProgress("a rebalance is running") from exc
    rollouts.kick(rollout_id)
    return await rollouts.get(rollout_id)


def plan(
    counts: Mapping[str, int], movable: Mapping[str, list[str]], capacity: Mapping[str, int | None]
) -> list[tuple[str, str]]:
    """(tenant, target) moves from the fullest server to the emptiest one with room, among ``capacity``'s servers,
    until their counts differ by at most one (or the fullest has nothing movable left)."""
    n = {s: counts.get(s, 0) for s in capacity}
    left = {s: list(movable.get(s, ())) for s in capacity}
    moves: list[tuple[str, str]] = []
    while len(n) > 1:
        high = max(n, key=lambda s: (n[s], s))
        room = [s for s in n if capacity[s] is None or n[s] < (capacity[s] or 0)]
        if not room or not left[high]:
            break
        low = min(room, key=lambda s: (n[s], s))
        if n[high] - n[low] <= 1:
            break
        moves.append((left[high].pop(), low))
        n[high], n[low] = n[high] - 1, n[low] + 1
    return moves


async def move_one(p: Provisioner, rollout: Rollout, tenant_id: str, planned: str | None) -> str:
    """Move one tenant of a drain or a rebalance and return the server it is on after. Raises what the move raises
    (the tenant is then back on its server), TenantNotFound (deleted meanwhile: the item is skipped)."""
    await p.settle(tenant_id)
    down = await placement.unreachable(p.servers) if planned is None else frozenset()
    async with p.server.catalog() as conn:
        tenant = await catalog.get(conn, tenant_id)
        if tenant is None or tenant.state == "deleted":
            raise TenantNotFound(tenant=tenant_id)
        if rollout.kind == "drain" and tenant.server != rollout.server:
            return tenant.server  # moved already (by the move a dead driver began, or by hand)
        if planned is not None and tenant.server == planned:
            return planned  # moved already
        if planned is None:
            counts, excluded = await catalog.count_by_server(conn), await lifecycle.draining(conn)
            planned = placement.choose(p.servers, counts, None, excluded, down).name
    return (await p.move(tenant_id, planned, wait=True, until_dropped=True)).server  # a drained server holds nothing
