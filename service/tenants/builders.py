"""The creation queue's builders in a child process of ``tenantctl serve``, so that no build shares the event loop
that answers HTTP.

Why a process: a build is mostly waiting on PostgreSQL, but each of its steps (a round trip, a pool release, a log
line) runs on the loop, and with several builds going a ``202`` waits behind them; Python code cannot leave the loop
for a thread and run in parallel with it (the GIL). bench/RESULTS.md has the figures.

:class:`Supervisor` runs in the HTTP process: it starts ``python -m service build-queue`` with the catalog's URL on
its standard input (never in its environment or arguments), wakes it with a line on that pipe whenever a creation
is queued or put back here, restarts it when it dies (after a pause that grows while it keeps dying), and stops it
(end of input, then SIGTERM, then SIGKILL) when the service stops. The child stops by itself when its input ends,
which is also what happens when the HTTP process is killed: a builder never outlives its service.

:func:`serve` is the child: :func:`.queue.work` for ``TENANTS_QUEUE_WORKERS`` workers, nothing else (the HTTP
process keeps the recovery loop, which puts back in the queue what a dead builder left half-made). Every guarantee
of the queue holds as it did in one process: the queue is the catalog's, a build holds the tenant's advisory lock on
a catalog connection that dies with its process, and the child's connections are lent out of the replica's budget
(:func:`service.store.budget.builder_ceiling`).

Why not a library: uvicorn's process manager and gunicorn's arbiter supervise copies of the HTTP server, not a
different program; procrastinate's worker is a command to run under an outside supervisor (systemd, Kubernetes)
and would not share the catalog transaction that records the tenant (see :mod:`.queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Final

from pydantic import SecretStr

from service.config import Settings, builder_environment
from service.history import layouts
from service.store.budget import Budgets, builder_ceiling
from service.store.db import Server, Servers
from service.tenants import queue
from service.tenants.provisioner import Provisioner

log = logging.getLogger(__name__)

COMMAND: Final = (sys.executable, "-m", "service", "build-queue")
# A child that dies before living this long is restarted after a pause that doubles up to _MAX_PAUSE.
_HEALTHY_AFTER: Final = 30.0
_FIRST_PAUSE: Final = 0.5
_MAX_PAUSE: Final = 30.0
_STOP_GRACE: Final = 10.0


class Supervisor:
    """The builder process of one ``tenantctl serve``: started by :meth:`running`, restarted when it dies."""

    def __init__(self, settings: Settings, database_url: str, wakeup: asyncio.Event) -> None:
        self._workers = settings.queue_workers
        self._url = database_url
        self._wakeup = wakeup
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running child's process id (None between a death and its restart)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        """Keep a builder running for the block; stop it (and wait for it) at the end."""
        keeper = asyncio.create_task(self._keep(), name="queue-builder")
        waker = asyncio.create_task(self._wake(), name="queue-builder-wakeup")
        try:
            yield self
        finally:
            self._stopping = True
            waker.cancel()
            await self._stop()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self) -> None:
        pause = _FIRST_PAUSE
        while not self._stopping:
            started = time.monotonic()
            try:
                proc = await self._spawn()
            except OSError as exc:
                log.error("the queue builder process did not start (%s); trying again in %g s", exc, pause)
                what = "not started"
            else:
                what = f"process {proc.pid} exited ({await proc.wait()})"
            if self._stopping:
                return
            pause = _FIRST_PAUSE if time.monotonic() - started > _HEALTHY_AFTER else min(pause * 2, _MAX_PAUSE)
            log.warning("queue builder %s; restarting it in %g s", what, pause)
            await asyncio.sleep(pause)

    async def _spawn(self) -> asyncio.subprocess.Process:
        ceiling = builder_ceiling(self._workers)
        proc = await asyncio.create_subprocess_exec(
            *COMMAND, stdin=asyncio.subprocess.PIPE, env=builder_environment(self._workers, ceiling)
        )
        self._proc = proc
        self.starts += 1
        assert proc.stdin is not None
        proc.stdin.write(self._url.encode() + b"\n")
        log.info("queue builder process %d started (%d workers)", proc.pid, self._workers)
        return proc

    async def _wake(self) -> None:
        """Forward each wake-up (a creation queued or put back here) to the child as a line on its input."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            proc = self._proc
            if proc is None or proc.stdin is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(b"\n")
                await proc.stdin.drain()

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), _STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def serve(settings: Settings) -> None:
    """The child's life: read the catalog's URL from standard input, run the queue workers until the input ends
    (the service stops or died) or SIGTERM. Raises what opening the catalog raises."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    url = (await reader.readline()).decode().strip()
    if not url:
        return  # the service went away before it said where the catalog is
    settings = settings.model_copy(update={"database_url": SecretStr(url)})
    migration_set = layouts.load(
        settings.migrations_dir,
        settings.seeds_path,
        layout=settings.layout,
        journal=settings.journal,
        tool_table=settings.tool_table,
    )
    budgets = Budgets(settings.connection_share, settings.connection_ceiling, settings.connection_wait)
    server = Server(url, settings.catalog_database, settings.pool_size, budgets)
    await server.open()
    servers = Servers.configure(server, settings.server_specs, settings.queue_workers)
    provisioner = Provisioner(servers, migration_set, settings)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the service stops its builder itself (else it would restart it).
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    try:
        for _ in range(settings.queue_workers):
            provisioner.spawn(queue.work(provisioner))
        listener = asyncio.create_task(_listen(reader, provisioner.queue_wakeup, stop))
        await stop.wait()
        listener.cancel()
    finally:
        await provisioner.close()
        await server.close()


async def _listen(reader: asyncio.StreamReader, wakeup: asyncio.Event, stop: asyncio.Event) -> None:
    """Each line is a wake-up; the end of the input (the service stopped or died) stops the builder."""
    while await reader.readline():
        wakeup.set()
    stop.set()
