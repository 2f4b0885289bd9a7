"""Real-server tests of service.embedded: durability, idempotence, exclusive ownership, orphans.

Clusters live under /dev/shm when available (tmpfs: initdb + start in well under a second).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.store.embedded import EmbeddedError, EmbeddedPostgres

MakePg = Callable[..., EmbeddedPostgres]


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphaned postmaster is reaped by init, maybe late)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
    except FileNotFoundError:
        return None


def _kill_leftover_postmasters(root: Path) -> None:
    """Safety net for failed tests: never leave a server running on a deleted directory."""
    for pidfile in root.glob("**/postmaster.pid"):
        pid = int(pidfile.read_text().split("\n", 1)[0])
        if not _alive(pid) or b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            continue
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workdir() -> Iterator[Path]:
    shm = Path("/dev/shm")  # noqa: S108 - only the parent of a private mkdtemp directory
    path = Path(tempfile.mkdtemp(prefix="embedded-pg-test-", dir=shm if shm.is_dir() else None))
    try:
        yield path
    finally:
        _kill_leftover_postmasters(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_pg(workdir: Path) -> Iterator[MakePg]:
    """Factory of non-durable clusters in ``workdir/data`` (by default); stops them all at teardown."""
    created: list[EmbeddedPostgres] = []

    def make(data_dir: Path | None = None, **kwargs: Any) -> EmbeddedPostgres:
        kwargs.setdefault("durable", False)
        pg = EmbeddedPostgres(data_dir or workdir / "data", **kwargs)
        created.append(pg)
        return pg

    yield make
    for pg in created:
        pg.stop()


async def _fetchval(url: str, query: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_data_survives_restart(make_pg: MakePg, workdir: Path) -> None:
    pg = make_pg(durable=True)
    url = pg.start()
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE survivor (name text)")
        await conn.execute("INSERT INTO survivor VALUES ('still here')")
    finally:
        await conn.close()
    pg.stop()
    with pytest.raises(EmbeddedError, match="not started"):
        _ = pg.url

    url = pg.start()  # the port may differ: it is picked afresh
    assert await _fetchval(url, "SELECT name FROM survivor") == "still here"
    assert await _fetchval(url, "SHOW fsync") == "on"
    assert await _fetchval(url, "SHOW max_connections") == "200"
    _assert_layout(workdir)


def _assert_layout(workdir: Path) -> None:
    data = workdir / "data"
    assert (data / "pgdata" / "PG_VERSION").is_file()
    assert (data / "postgres.log").is_file()
    if os.geteuid() == 0:
        # mkdtemp made workdir 0700; only the search bit may have been added for the server user.
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o701
        assert (data / "pgdata").stat().st_uid != 0


def test_start_is_idempotent(make_pg: MakePg, workdir: Path) -> None:
    pg = make_pg()
    url = pg.start()
    pid = _postmaster_pid(workdir / "data")
    assert pg.start() == url == pg.url
    assert _postmaster_pid(workdir / "data") == pid
    assert asyncio.run(_fetchval(url, "SHOW fsync")) == "off"
    pg.stop()
    pg.stop()  # idempotent too

    with EmbeddedPostgres(workdir / "data", durable=False) as again:
        assert asyncio.run(_fetchval(again.url, "SELECT 1")) == 1
    assert _postmaster_pid(workdir / "data") is None


def test_second_owner_is_refused(make_pg: MakePg) -> None:
    first = make_pg()
    url = first.start()
    second = make_pg()
    with pytest.raises(EmbeddedError, match="in use by another process"):
        second.start()
    second.stop()  # never started: must not touch the first one's server
    assert asyncio.run(_fetchval(url, "SELECT 1")) == 1

    first.stop()
    assert asyncio.run(_fetchval(second.start(), "SELECT 1")) == 1


def test_orphan_of_killed_owner_is_stopped(make_pg: MakePg, workdir: Path) -> None:
    data = workdir / "data"
    owner = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from service.store.embedded import EmbeddedPostgres
        print(EmbeddedPostgres(Path(sys.argv[1]), durable=False).start(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    # capture_output also proves the postmaster holds none of its owner's pipes (else: timeout).
    proc = subprocess.run(
        [sys.executable, "-c", owner, str(data)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphan = _postmaster_pid(data)
    assert orphan is not None
    assert _alive(orphan), "the postmaster should outlive its SIGKILLed owner"

    pg = make_pg()
    url = pg.start()
    assert asyncio.run(_fetchval(url, "SELECT 1")) == 1
    assert not _alive(orphan)
    current = _postmaster_pid(data)
    assert current is not None
    assert current != orphan

    pg.stop()
    assert _postmaster_pid(data) is None
    assert not _alive(current)
