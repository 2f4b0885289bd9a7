from __future__ import annotations

import asyncio

import pytest

from service.tenants.cache import Recent, Revalidating


async def test_concurrent_callers_share_one_load_and_the_value_expires() -> None:
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return loads

    cache = Recent(load, ttl=0.2)
    assert await asyncio.gather(*(cache.get() for _ in range(20))) == [1] * 20
    assert await cache.get() == 1
    await asyncio.sleep(0.25)
    assert await cache.get() == 2
    cache.clear()
    assert await cache.get() == 3


async def test_zero_ttl_always_loads() -> None:
    calls = iter(range(100))

    async def load() -> int:
        return next(calls)

    cache = Recent(load, ttl=0)
    assert [await cache.get() for _ in range(3)] == [0, 1, 2]


class Loads:
    """A loader that counts its calls and returns the next value, or raises when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def __call__(self) -> int:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("down")
        return self.calls


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_revalidating_answers_from_memory_then_reloads_in_the_background() -> None:
    cache: Revalidating[int] = Revalidating(ttl=0.05, limit=10)
    load = Loads()
    assert await cache.get("a", 1, load) == 1
    assert await cache.get("a", 1, load) == 1
    assert load.calls == 1
    await asyncio.sleep(0.06)
    assert await cache.get("a", 1, load) == 1  # old, answered at once; a reload starts
    await settle()
    assert load.calls == 2
    assert await cache.get("a", 1, load) == 2
    await cache.close()


async def test_a_new_stamp_loads_at_once() -> None:
    cache: Revalidating[int] = Revalidating(ttl=60, limit=10)
    load = Loads()
    assert await cache.get("a", 1, load) == 1
    assert await cache.get("a", 2, load) == 2
    assert await cache.get("b", 2, load) == 3
    cache.forget("a")
    assert await cache.get("a", 2, load) == 4


async def test_a_failed_reload_forgets_so_the_next_read_reports_it() -> None:
    cache: Revalidating[int] = Revalidating(ttl=0, limit=10)
    load = Loads()
    assert await cache.get("a", 1, load) == 1
    load.fail = True
    assert await cache.get("a", 1, load) == 1  # the reload fails in the background
    await settle()
    with pytest.raises(RuntimeError):
        await cache.get("a", 1, load)


async def test_least_recently_read_keys_go_first() -> None:
    cache: Revalidating[int] = Revalidating(ttl=60, limit=2)
    load = Loads()
    for key in ("a", "b"):
        await cache.get(key, 0, load)
    await cache.get("a", 0, load)  # b is now the least recently read
    await cache.get("c", 0, load)
    calls = load.calls
    await cache.get("a", 0, load)
    assert load.calls == calls
    await cache.get("b", 0, load)
    assert load.calls == calls + 1
