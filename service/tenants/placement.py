"""Placement: which server a new tenant goes to.

**Placement.** A new tenant goes to the server the request names, else to the one with the fewest tenants among
those with room (fewer tenants than their capacity), the first configured on a tie. Counting tenants, not the
fraction of capacity used, keeps placement predictable when capacities are unlimited or very different; capacity
is a ceiling, not a weight. Counts are every catalog row of a server, whatever its state: a failed tenant is
retried, and a creation in flight will finish.

Two creations (in this process or in replicas sharing the catalog) must never both take a server's last place, so
the count and the insert of the new row happen in one catalog transaction holding an advisory lock on a fixed
placement key; the lock ends with the transaction, so placements queue only for the few milliseconds of a count.
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


def choose(servers: Servers, counts: Mapping[str, int], named: str | None, draining: Collection[str] = ()) -> Target:
    """The server a new tenant goes to, never a draining one. Raises UnknownServer, ServerDraining, ServerFull (the
    named one has no room), NoCapacity."""
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
    return min(room, key=lambda t: (counts.get(t.name, 0), order[t.name]))


async def place(conn: Conn, servers: Servers, tenant_id: str, named: str | None) -> Target:
    """Choose a server for ``tenant_id`` inside the caller's catalog transaction, which must also write the row.

    The transaction-level lock is held until the caller commits, so the next placement counts this tenant. With no
    capacity anywhere there is no last place to protect: no lock (a burst of creations does not queue behind each
    other's commits), and with one server nothing to count.
    """
    if all(t.capacity is None for t in servers):
        counts = {} if len(servers) == 1 else await catalog.count_by_server(conn, excluding=tenant_id)
        return choose(servers, counts, named, await lifecycle.draining(conn))
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_PLACEMENT_LOCK)
    counts = await catalog.count_by_server(conn, excluding=tenant_id)
    return choose(servers, counts, named, await lifecycle.draining(conn))
