"""``tenantctl`` end to end: the real server in a subprocess, the CLI as subprocesses, exit codes and stderr lines.

One test also runs the zero-configuration path: no database URL, an embedded PostgreSQL in a data directory that
survives a restart and leaves no server process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from service import __version__
from service.cli import main as cli_main
from service.store.db import with_database

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "migrations"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTS_", "PG"))}
    env.update(extra)
    return env


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; the exit code (uvicorn re-raises the signal after its graceful shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server ignored SIGTERM\n{self.output()}") from None


def start_service(env: dict[str, str], log: Path, *, timeout: float = 60) -> Service:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "service", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = Service(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}\n{service.output()}")
        try:
            if httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise AssertionError(f"server did not answer /healthz\n{service.output()}")
        time.sleep(0.05)


CLEAN_EXIT = {0, -signal.SIGTERM}


def assert_clean_exit(service: Service, timeout: float = 30) -> None:
    code = service.stop(timeout)
    log = service.output()
    assert code in CLEAN_EXIT, log
    # Every start in this log (a restart appends to it) was followed by a complete shutdown.
    assert log.count("Application shutdown complete.") == log.count("Application startup complete.") > 0
    assert "Traceback" not in log


def tenantctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "service", *args],
        cwd=ROOT,
        env=base_env(TENANTS_URL=url, TENANTS_TIMEOUT="60"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The error's first line; any further line is one of its details, indented (``  name: value``)."""
    lines = result.stderr.splitlines()
    assert lines, result.stderr
    assert lines[0].startswith(prefix), result.stderr
    assert all(line.startswith("  ") and ": " in line for line in lines[1:]), result.stderr
    return lines[0]


@pytest.fixture
def service(pg_url: str, tag: str, cleanup: None, tmp_path: Path) -> Iterator[Service]:
    env = base_env(
        TENANTS_DATABASE_URL=pg_url,
        TENANTS_CATALOG_DATABASE=f"cat_{tag}",
        TENANTS_DB_PREFIX=f"t{tag}_",
        TENANTS_MIGRATIONS_DIR=str(FIXTURES / "ok"),
        TENANTS_LOG_LEVEL="info",
    )
    running = start_service(env, tmp_path / "server.log")
    try:
        yield running
    finally:
        running.stop()


async def test_cli_drives_the_service(service: Service, pg_url: str, tag: str) -> None:
    url = service.url
    database = f"t{tag}_acme"

    created = tenantctl(url, "create", "acme", "--name", "Acme Studio", "--seed", "email=owner@acme.test")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("acme  ready  version 1/1")
    assert database in created.stdout

    again = tenantctl(url, "create", "acme", "--name", "Acme Studio", "--seed", "email=owner@acme.test", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "ready"

    conflict = tenantctl(url, "create", "acme", "--name", "Someone Else")
    assert conflict.returncode == 1
    one_error_line(conflict, "tenantctl: tenant_exists")

    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        rows = await conn.fetch("SELECT email, name FROM accounts")
        assert [(r["email"], r["name"]) for r in rows] == [("owner@acme.test", "Acme Studio")]
    finally:
        await conn.close()

    status = tenantctl(url, "status", "acme")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0].split()[:2] == ["acme", "up_to_date"]
    status_json = tenantctl(url, "status", "acme", "--json")
    assert status_json.returncode == 0, status_json.stderr
    body = json.loads(status_json.stdout)
    assert (body["status"], body["current_version"], body["latest_version"]) == ("up_to_date", 1, 1)
    assert [a["version"] for a in body["applied"]] == [0, 1]

    assert tenantctl(url, "create", "beta").returncode == 0
    listed = tenantctl(url, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "STATUS", "VERSION", "SERVER", "DATABASE"]
    assert [line.split()[:5] for line in lines[1:]] == [
        ["acme", "ready", "up_to_date", "1/1", "default"],
        ["beta", "ready", "up_to_date", "1/1", "default"],
    ]
    listed_json = json.loads(tenantctl(url, "list", "--json", "--state", "ready").stdout)
    assert [t["id"] for t in listed_json] == ["acme", "beta"]
    assert json.loads(tenantctl(url, "list", "--json", "--state", "failed").stdout) == []

    migrated = tenantctl(url, "migrate", "acme")
    assert migrated.returncode == 0, migrated.stderr
    assert "up_to_date" in migrated.stdout
    assert json.loads(tenantctl(url, "migrate", "acme", "--json").stdout)["status"] == "up_to_date"

    refused = tenantctl(url, "delete", "acme")
    assert refused.returncode == 2
    one_error_line(refused, "tenantctl: ")
    assert tenantctl(url, "status", "acme").returncode == 0  # still there

    deleted = tenantctl(url, "delete", "acme", "--yes", "--purge")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "purged acme"

    gone = tenantctl(url, "status", "acme")
    assert gone.returncode == 1
    assert gone.stdout == ""
    one_error_line(gone, "tenantctl: tenant_not_found")
    assert tenantctl(url, "delete", "acme", "--yes").returncode == 1
    assert [t["id"] for t in json.loads(tenantctl(url, "list", "--json").stdout)] == ["beta"]

    # SIGTERM: a graceful shutdown (the lifespan's cleanup ran), no traceback.
    assert_clean_exit(service)


@pytest.mark.parametrize(
    "args",
    [
        ("create", "Acme"),
        ("status", "x" * 41),
        ("migrate", "a;drop"),
        ("delete", "Acme", "--yes"),
        ("create", "acme", "--seed", "no-equals-sign"),
        ("delete", "acme"),
        ("frobnicate",),
        ("list", "--state", "bogus"),
        ("create", "acme", "--strategy", "copy"),
    ],
)
def test_bad_usage_exits_2_without_calling_the_service(args: tuple[str, ...]) -> None:
    # Nothing listens on this port: an exit 2 proves the CLI refused before any request.
    result = tenantctl(f"http://127.0.0.1:{free_port()}", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip()


@pytest.mark.parametrize("args", [("list",), ("create", "acme")])
def test_unreachable_service_exits_1(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = tenantctl(url, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_error_line(result, "tenantctl: cannot reach the service")
    assert url in line


def test_failed_creation_names_the_location(pg_url: str, tag: str, cleanup: None, tmp_path: Path) -> None:
    env = base_env(
        TENANTS_DATABASE_URL=pg_url,
        TENANTS_CATALOG_DATABASE=f"cat_{tag}",
        TENANTS_DB_PREFIX=f"t{tag}_",
        TENANTS_MIGRATIONS_DIR=str(FIXTURES / "failing_stmt"),
        TENANTS_LOG_LEVEL="error",
    )
    running = start_service(env, tmp_path / "server.log")
    try:
        result = tenantctl(running.url, "create", "acme")
        assert result.returncode == 1
        one_error_line(result, "tenantctl: migration_failed: 0002_notes.sql: ")
        details = result.stderr.splitlines()[1:]
        for member in ("file: 0002_notes.sql", "statement: 3", "line: 5", "sqlstate: 42P01", "version: 2"):
            assert f"  {member}" in details, result.stderr
    finally:
        assert running.stop() in CLEAN_EXIT


# -- zero configuration: the embedded PostgreSQL --------------------------------------------------------------------


def _postgres_processes_for(data_dir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            status = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if status != "Z" and str(data_dir).encode() in cmdline and b"postgres" in cmdline:
            found.append(int(proc.name))
    return found


def _kill_leftovers(data_dir: Path) -> None:
    """Safety net for a failed test: never leave a server running on a deleted directory."""
    for pid in _postgres_processes_for(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while _postgres_processes_for(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _postgres_processes_for(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    shm = Path("/dev/shm")  # noqa: S108 - only the parent of a private mkdtemp directory
    path = Path(tempfile.mkdtemp(prefix="tenants-cli-test-", dir=shm if shm.is_dir() else None))
    try:
        yield path / "data"
    finally:
        _kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


def test_zero_config_embedded_postgres_survives_a_restart(data_dir: Path, tmp_path: Path) -> None:
    env = base_env(
        TENANTS_DATA_DIR=str(data_dir), TENANTS_MIGRATIONS_DIR=str(FIXTURES / "ok"), TENANTS_LOG_LEVEL="info"
    )
    log = tmp_path / "server.log"
    start: Callable[[], Service] = lambda: start_service(env, log, timeout=120)  # noqa: E731

    first = start()
    try:
        created = tenantctl(first.url, "create", "local", "--name", "Local Studio")
        assert created.returncode == 0, created.stderr
        assert "ready" in created.stdout
    finally:
        assert_clean_exit(first, timeout=60)
    assert _postgres_processes_for(data_dir) == []
    assert (data_dir / "pgdata").is_dir()

    second = start()
    try:
        shown = tenantctl(second.url, "list", "--json")
        assert shown.returncode == 0, shown.stderr
        assert [(t["id"], t["name"], t["state"], t["version"]) for t in json.loads(shown.stdout)] == [
            ("local", "Local Studio", "ready", 1)
        ]
        status = tenantctl(second.url, "status", "local", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["status"] == "up_to_date"
        assert _postgres_processes_for(data_dir) != []
    finally:
        assert_clean_exit(second, timeout=60)
    assert _postgres_processes_for(data_dir) == []
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert "Traceback" not in log.read_text(errors="replace")


# -- the CLI says why (in-process: service.cli.main against the real server) ------------------------------------


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        cli_main(list(args))
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def test_cli_prints_the_reason_of_every_problem(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    url = ("--url", service.url)
    code, out, err = _main(capsys, *url, "create", "acme", "--name", "x" * 300)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == "tenantctl: invalid_request: the request is invalid (HTTP 422)"
    assert [line for line in lines[1:] if line.startswith("  body.name: ")], err
    # --json: the problem body itself on stdout, the same reason on stderr.
    code, out, err = _main(capsys, *url, "create", "acme", "--name", "x" * 300, "--json")
    body = json.loads(out)
    assert (code, body["code"], body["status"]) == (1, "invalid_request", 422)
    assert body["errors"][0]["loc"] == ["body", "name"]
    # Extra members, one per line.
    code, out, err = _main(capsys, *url, "create", "acme", "--server", "nosuch")
    assert (code, err.splitlines()[0].split(":")[1]) == (1, " unknown_server")
    assert "  server: nosuch" in err.splitlines(), err
    # A fixed-value option is checked before any request, and its values are listed.
    code, out, err = _main(capsys, *url, "list", "--state", "bogus")
    assert code == 2
    assert "provisioning" in err
    assert "deleting" in err
    # The new commands reach the API: show, events, create --async --wait.
    code, out, err = _main(capsys, *url, "create", "bg", "--async", "--wait", "--json")
    created = json.loads(out)
    assert (code, created["state"], created["connection_url"].startswith("postgresql://")) == (0, "ready", True)
    code, out, _ = _main(capsys, *url, "show", "bg")
    assert (code, out.split()[:2]) == (0, ["bg", "ready"])
    code, out, _ = _main(capsys, *url, "events", "bg")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "STARTED", "KIND", "ACTOR", "OUTCOME"]
    assert out.splitlines()[1].split()[2] == "create"
    assert out.splitlines()[1].split()[-1] == "succeeded"


def test_help_lists_choices_env_fallbacks_and_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(capsys, "--help")
    assert code == 0
    assert "TENANTS_URL" in out
    assert "TENANTS_TOKEN" in out
    for command in ("--help", "create --help", "list --help", "check --help", "new --help", "rollout --help"):
        code, out, _ = _main(capsys, *command.split())
        assert code == 0
        assert "<bool>" not in out, out
        assert "[default: ]" not in out, out
        # An emptied default left "Migrations folder ." behind.
        assert re.search(r"\w \.(\s|$)", out) is None, out
    _, out, _ = _main(capsys, "create", "--help")
    assert "replay|clone" in out
    code, out, _ = _main(capsys, "--version")
    assert (code, out.strip()) == (0, f"tenantctl {__version__}")


def test_global_url_and_token_with_their_env_fallbacks(
    pg_url: str,
    tag: str,
    cleanup: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "a-long-enough-admin-token"
    env = base_env(
        TENANTS_DATABASE_URL=pg_url,
        TENANTS_CATALOG_DATABASE=f"cat_{tag}",
        TENANTS_DB_PREFIX=f"t{tag}_",
        TENANTS_MIGRATIONS_DIR=str(FIXTURES / "ok"),
        TENANTS_ADMIN_TOKEN=token,
        TENANTS_LOG_LEVEL="warning",
    )
    running = start_service(env, tmp_path / "server.log")
    try:
        code, _, err = _main(capsys, "--url", running.url, "list")
        assert (code, err.splitlines()[0].split(":")[1]) == (1, " unauthorized")
        code, out, err = _main(capsys, "--url", running.url, "--token", token, "list", "--json")
        assert (code, json.loads(out)) == (0, [])
        # The same from the environment, as --help says.
        monkeypatch.setenv("TENANTS_URL", running.url)
        monkeypatch.setenv("TENANTS_TOKEN", token)
        code, out, err = _main(capsys, "list", "--json")
        assert (code, json.loads(out)) == (0, [])
    finally:
        assert running.stop() in CLEAN_EXIT
