"""Small caches for what dashboards poll.

:class:`Recent`: a single-flight value with a time-to-live, for fleet-wide aggregates. At a few hundred requests a
second an aggregate over every tenant row would keep a core busy for numbers that change far more slowly; one query
per ``ttl`` serves them all, and concurrent callers share the query in flight.

:class:`Revalidating`: per-key values served at once and refreshed in the background once older than ``ttl``,
for tenants' levels: a dashboard cycling through thousands of tenants would otherwise open a connection to a tenant
database on every read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Recent(Generic[T]):
    def __init__(self, load: Callable[[], Awaitable[T]], ttl: float) -> None:
        self._load = load
        self._ttl = ttl
        self._value: T | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        if time.monotonic() - self._at < self._ttl and self._value is not None:
            return self._value
        async with self._lock:  # one load in flight; the others wait and take its result
            if time.monotonic() - self._at >= self._ttl or self._value is None:
                self._value = await self._load()
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        self._at = float("-inf")


class Revalidating(Generic[T]):
    """Values by key, each with a ``stamp`` (what the key's value depends on, known without loading it). A read
    with the same stamp is answered from memory, however old, and starts one background reload once the value is
    older than ``ttl``; a new stamp, or an unknown key, loads at once. A failed reload forgets the key, so that the
    next read loads and reports the failure itself. At most ``limit`` keys are kept, least recently read dropped
    first; at most ``reloads`` run at once (the others are skipped: a later read starts them).
    """

    def __init__(self, ttl: float, limit: int, reloads: int = 4) -> None:
        self._ttl = ttl
        self._limit = limit
        self._reloads = reloads
        self._entries: OrderedDict[str, tuple[Hashable, float, T]] = OrderedDict()
        self._reloading: dict[str, asyncio.Task[None]] = {}

    async def get(self, key: str, stamp: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        entry = self._entries.get(key)
        if entry is None or entry[0] != stamp:
            value = await load()
            self._put(key, stamp, value)
            return value
        self._entries.move_to_end(key)
        old = time.monotonic() - entry[1] >= self._ttl
        if old and key not in self._reloading and len(self._reloading) < self._reloads:
            task = asyncio.create_task(self._reload(key, stamp, load), name=f"reload-{key}")
            self._reloading[key] = task
            task.add_done_callback(lambda _: self._reloading.pop(key, None))
        return entry[2]

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        tasks = list(self._reloading.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reload(self, key: str, stamp: Hashable, load: Callable[[], Awaitable[T]]) -> None:
        try:
            value = await load()
        except Exception as exc:  # the next read loads, and answers with the error
            log.info("reloading %s failed: %s", key, exc)
            self.forget(key)
            return
        current = self._entries.get(key)
        if current is not None and current[0] == stamp:  # not replaced by a newer load meanwhile
            self._put(key, stamp, value)

    def _put(self, key: str, stamp: Hashable, value: T) -> None:
        self._entries[key] = (stamp, time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
