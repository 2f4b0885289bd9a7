"""Placement: which server a new tenant goes to.

**Placement.** A new tenant goes to the server the request names, else to the one with the fewest tenants among
those with room (fewer tenants than their capacity), the first configured on a tie. Counting tenants, not the
fraction of capacity used, keeps placement predictable when capacities are unlimited or very different; capacity
is a ceiling, not a weight. Counts are every catalog row of a server, whatever its state: a failed tenant is
retried, and a creation in flight will finish.

Two creations (in this process or in replicas sharing the catalog) must never both take a server's last place, so
the count and the insert of the new row happen in one catalog transaction holding an advisory lock on a fixed
placement key; the lock ends with the transaction, so placements queue only for the few milliseconds of a count.

**A server that is down** (this process's last connection to it failed, and a probe at most once a second still
fails: :meth:`Target.reachable`) gets no new tenant unless the request names it or every server with room is down;
then a synchronous creation answers 503 ``database_unavailable`` (nothing is left behind) and a queued one waits in
the queue until the server answers. A server that went down unseen is found by the first creation placed on it:
that creation is placed again on another server (:mod:`.create`), so it does not fail for it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final

from service.errors import NoCapacity, ServerDraining, ServerFull, UnknownServer
from service.store import catalog, lifecycle
from service.store.db import Conn, Servers, Target

# First key of the placement lock: apart from db.LOCK_NAMESPACE (tenants, hashed ids) and rollouts' 0x7E4A2, so it
# can never collide with either.
_PLACEMENT_LOCK: Final = (0x7E4A3, 0)


def require(servers: Servers, name: str) -> Target:
    """The configured server of that name; UnknownServer (422) when a request names another."""
    found = servers.get(name)
    if found is None:
        raise UnknownServer(f"no configured database server is named {name!r}", server=name, servers=servers.names)
    return found


def _has_room(target: Target, counts: Mapping[str, int]) -> bool:
    return target.capacity is None or counts.get(target.name, 0) < target.capacity


def choose(
    servers: Servers,
    counts: Mapping[str, int],
    named: str | None,
    draining: Collection[str] = (),
    down: Collection[str] = (),
) -> Target:
    """The server a new tenant goes to, never a draining one, and not one that is ``down`` while another has room.
    Raises UnknownServer, ServerDraining, ServerFull (the named one has no room), NoCapacity."""
    if named is not None:
        target = require(servers, named)
        if named in draining:
            raise ServerDraining(server=named)
        if not _has_room(target, counts):
            raise ServerFull(server=named, capacity=target.capacity, tenants=counts.get(named, 0))
        return target
    order = {name: i for i, name in enumerate(servers.names)}
    room = [t for t in servers if _has_room(t, counts) and t.name not in draining]
    if not room:
        raise NoCapacity(
            servers=[{"name": t.name, "tenants": counts.get(t.name, 0), "capacity": t.capacity} for t in servers]
        )
    up = [t for t in room if t.name not in down] or room
    return min(up, key=lambda t: (counts.get(t.name, 0), order[t.name]))


async def unreachable(servers: Servers) -> frozenset[str]:
    """The servers seen down that a probe still cannot reach (none probed while all answer: no cost)."""
    if len(servers) == 1:
        return frozenset()
    return frozenset([t.name for t in servers if t.seen_down and not await t.reachable()])


async def place(conn: Conn, servers: Servers, tenant_id: str, named: str | None, down: Collection[str] = ()) -> Target:
    """Choose a server for ``tenant_id`` inside the caller's catalog transaction, which must also write the row
    (``down``: :func:`unreachable`, asked before the transaction, so no probe holds the placement lock).

    The transaction-level lock is held until the caller commits, so the next placement counts this tenant. With no
    capacity anywhere there is no last place to protect: no lock (a burst of creations does not queue behind each
    other's commits), and with one server nothing to count.
    """
    if all(t.capacity is None for t in servers):
        counts = {} if len(servers) == 1 else await catalog.count_by_server(conn, excluding=tenant_id)
        return choose(servers, counts, named, await lifecycle.draining(conn), down)
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_PLACEMENT_LOCK)
    counts = await catalog.count_by_server(conn, excluding=tenant_id)
    return choose(servers, counts, named, await lifecycle.draining(conn), down)
