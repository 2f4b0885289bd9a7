from __future__ import annotations

import asyncio

from service.cache import Recent


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
