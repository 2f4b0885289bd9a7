"""A tiny single-flight cache with a time-to-live, for fleet-wide aggregates that dashboards poll.

At a few hundred requests a second an aggregate over every tenant row would keep a core busy for numbers that
change far more slowly; one query per ``ttl`` serves them all, and concurrent callers share the query in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


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
