"""How long an event loop keeps a ready callback waiting while CPU-bound Python runs beside it: in the loop, in a
thread (``asyncio.to_thread``), or in another process.

``python -m bench.loop_lag`` measures, for each placement, the lag of a 1 ms timer sampled for ``--seconds`` (how
late it fires: what a request waiting for its turn would see), while pure-Python work (50 ms steps) runs; and with
nothing running, as the limit of the machine at that moment. The placements are interleaved ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor

from bench.queue import percentile


def work(ms: float = 50.0) -> int:
    """Pure-Python CPU (holds the GIL) for about ``ms`` milliseconds."""
    end, n = time.perf_counter() + ms / 1000, 0
    while time.perf_counter() < end:
        n += sum(i * i for i in range(200))
    return n


async def lag(seconds: float) -> list[float]:
    """How late (ms) a 1 ms sleep wakes, sampled for ``seconds``."""
    late: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - t0) * 1000 - 1)
    return late


async def measure(seconds: float, load: Callable[[asyncio.Event], Awaitable[None]] | None) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.create_task(load(stop)) if load is not None else None
    try:
        return await lag(seconds)
    finally:
        stop.set()
        if task is not None:
            await task


async def main(args: argparse.Namespace) -> None:
    pool = ProcessPoolExecutor(1)
    pool.submit(work, 1).result()  # started before measuring
    loop = asyncio.get_running_loop()

    async def in_loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            work()
            await asyncio.sleep(0)

    async def in_thread(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(work)

    async def in_process(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await loop.run_in_executor(pool, work)

    placements = {"nothing": None, "in the loop": in_loop, "to_thread": in_thread, "another process": in_process}
    results: dict[str, list[float]] = {name: [] for name in placements}
    for _ in range(args.rounds):
        for name, load in placements.items():
            results[name] += await measure(args.seconds, load)
    pool.shutdown()
    report = {
        name: {
            "p50": round(statistics.median(ms), 2),
            "p99": round(percentile(ms, 99), 2),
            "max": round(max(ms), 2),
            "samples": len(ms),
        }
        for name, ms in results.items()
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
