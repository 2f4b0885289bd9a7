"""Real-server tests of service.embedded: durability, idempotence, exclusive ownership, orphans, passwords, the
stable port, and the upgrade of a cluster made when it trusted every local connection.

Clusters live under /dev/shm when available (tmpfs: initdb + start in well under a second).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from service.config import Settings
from service.store.embedded import EmbeddedError, EmbeddedPostgres, bundled_bin_dir
from service.store.processes import PG_OS_USER, free_port
from tests.conftest import ROOT, running

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
    assert url.startswith("postgresql://postgres:")
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

    again = pg.start()
    assert again == url  # same password, same port: kept in the data directory
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


# -- locked like a real server: passwords, a stable port, old trust clusters upgraded --------------------------------

PSQL = bundled_bin_dir() / "psql"


def _as_user(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/"}
    return subprocess.run(args, user=user, env=env, capture_output=True, text=True, timeout=30, check=False, cwd="/")


async def _refused(url: str) -> str:
    """The reason the server gives for refusing ``url`` (fails the test if it lets the connection in)."""
    try:
        conn = await asyncpg.connect(url)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return str(exc)
    await conn.close()
    raise AssertionError(f"{url} was let in")


def test_superuser_needs_the_password_kept_for_the_service_user_only(make_pg: MakePg, workdir: Path) -> None:
    data = workdir / "data"
    url = make_pg().start()
    password = urlsplit(url).password
    assert password is not None
    assert len(password) >= 40
    secret = data / "superuser.password"
    assert secret.read_text().strip() == password
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.stat().st_uid == os.geteuid()
    assert asyncio.run(_fetchval(url, "SHOW password_encryption")) == "scram-sha-256"
    hba = (data / "pgdata" / "pg_hba.conf").read_text()
    assert "trust" not in [f for line in hba.splitlines() for f in line.split("#")[0].split()]
    port = urlsplit(url).port
    assert "password authentication failed" in asyncio.run(_refused(url.replace(password, "wrong" + password[5:])))
    assert "password" in asyncio.run(_refused(f"postgresql://postgres@127.0.0.1:{port}/postgres"))
    _operator_shell(url, data)
    if os.geteuid() != 0:
        return
    # Another account on the machine: cannot read the password, and cannot get in without it. Neither can the
    # server's own OS user read the file: postgres keeps only the SCRAM verifier.
    for user in ("nobody", PG_OS_USER):
        assert _as_user(user, "cat", str(secret)).returncode != 0
    shell = _as_user("nobody", str(PSQL), "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "SELECT 1")
    assert shell.returncode != 0
    assert "no password supplied" in shell.stderr


def _operator_shell(url: str, data: Path) -> None:
    """``tenantctl psql``: the bundled psql, logged in with the kept password, in a tenant's database if asked."""
    asyncio.run(_fetchval(url, "CREATE DATABASE t_acme"))
    env = {**os.environ, "TENANTS_DATA_DIR": str(data), "TENANTS_DB_PREFIX": "t_"}

    def tenantctl(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service", "psql", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert tenantctl("--url").strip() == url
    assert "postgres" in tenantctl("-c", "SELECT current_user").split()
    assert "t_acme" in tenantctl("acme", "-c", "SELECT current_database()").split()


def test_trust_cluster_is_locked_in_place(make_pg: MakePg, workdir: Path) -> None:
    """A data directory made before passwords: pg_hba.conf trusting everyone, no password file, no port file."""
    data = workdir / "data"
    pg = make_pg()
    asyncio.run(_fetchval(pg.start(), "CREATE TABLE kept AS SELECT 'old data'::text AS v"))
    pg.stop()
    hba = data / "pgdata" / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
    (data / "superuser.password").unlink()
    (data / "port").unlink()

    url = pg.start()
    assert asyncio.run(_fetchval(url, "SELECT v FROM kept")) == "old data"
    assert "trust" not in hba.read_text().replace("trust nowhere", "")
    assert (data / "superuser.password").read_text().strip() == urlsplit(url).password
    port = urlsplit(url).port
    assert "password" in asyncio.run(_refused(f"postgresql://postgres@127.0.0.1:{port}/postgres"))


def test_port_is_kept_and_a_taken_one_is_refused(make_pg: MakePg, workdir: Path) -> None:
    wanted = free_port()
    pg = make_pg(port=wanted)
    assert urlsplit(pg.start()).port == wanted
    pg.stop()
    again = make_pg()  # no port asked: the kept one
    assert urlsplit(again.start()).port == wanted
    again.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", wanted))
        squatter.listen()
        with pytest.raises(EmbeddedError, match=rf"port {wanted} on 127.0.0.1, kept in the data directory .* in use"):
            make_pg().start()
    assert (workdir / "data" / "port").read_text().strip() == str(wanted)


async def test_tenant_urls_survive_a_restart_and_rotation_locks_out_the_old_one(workdir: Path) -> None:
    """The service on its own embedded cluster: a connection_url handed out before a restart still connects after
    it; a rotated password stops working at once; a wrong one never works."""
    settings = Settings(data_dir=workdir / "svc", migrations_dir=ROOT / "migrations", embedded_port=free_port())
    async with running(settings) as client:
        created = await client.post("/tenants", json={"id": "acme", "name": "Acme"})
        assert created.status_code == 201, created.text
        first = created.json()["connection_url"]
        assert await _fetchval(first, "SELECT current_user") == "tenant_acme"
        rotated = await client.post("/tenants/acme/credentials/rotate")
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["connection_url"]
        assert "password authentication failed" in await _refused(first)
        assert "password authentication failed" in await _refused(second.replace("@", "x@", 1))
    assert (workdir / "svc" / "port").read_text().strip() == str(settings.embedded_port)

    unset = Settings(data_dir=workdir / "svc", migrations_dir=ROOT / "migrations")  # the kept port, not asked
    async with running(unset) as client:
        assert (await client.get("/tenants/acme")).json()["state"] == "ready"
        assert await _fetchval(second, "SELECT current_database()") == "tenant_acme"
        assert "password authentication failed" in await _refused(first)
