"""``tenantctl serve`` refusing to start: one plain paragraph on stderr, whatever the log format, no traceback.

None of these starts a PostgreSQL: each refusal comes before one would be needed, so they take a second each.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"


def serve(env: dict[str, str], port: int | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", str(port or free_port())],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def paragraph(stderr: str, fmt: str) -> list[str]:
    """The lines that are not log lines; every log line must be one of the format (JSON: without escapes)."""
    said = []
    for line in stderr.splitlines():
        if fmt == "json" and line.startswith("{"):
            event = json.loads(line)
            assert "\x1b" not in json.dumps(event, ensure_ascii=False), line
            assert "color_message" not in event
        elif fmt == "text" and line[:4].isdigit():  # "2026-01-01 12:00:00,000 INFO [...] logger: message"
            assert "\x1b" not in line
        else:
            said.append(line)
    assert "Traceback" not in stderr
    assert sum("did not start" in line for line in stderr.splitlines()) == 1
    return said


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port someone else listens on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_broken_migrations_folder(fmt: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0000_first.sql").write_text("CREATE TABLE a (id int);\n")
    (folder / "0002_gap.sql").write_text("CREATE TABLE b (id int);\n")
    (folder / "notes.sql").write_text("SELECT 1;\n")
    env = {"TENANTS_MIGRATIONS_DIR": str(folder), "TENANTS_DATA_DIR": str(tmp_path / "data"), "TENANTS_LOG_FORMAT": fmt}
    done = serve(env)
    assert done.returncode == 1, done.stderr
    said = paragraph(done.stderr, fmt)
    assert said[0] == f"The service did not start: the migrations folder {folder} is not valid."
    problems = [line for line in said if line.startswith("  - ")]
    assert any("0001" in p for p in problems), said
    assert any("notes.sql" in p for p in problems), said
    assert said[-1].startswith("Fix the files listed (`tenantctl check` shows the same list)")
    assert not (tmp_path / "data").exists()  # refused before any PostgreSQL was made


def test_bad_settings_are_listed_one_per_line(tmp_path: Path) -> None:
    done = serve({"TENANTS_POOL_SIZE": "1", "TENANTS_STRATEGY": "copy", "TENANTS_LOG_FORMAT": "json"})
    assert done.returncode == 2, done.stderr
    said = paragraph(done.stderr, "json")
    assert said[0] == "The service did not start: its settings are not valid."
    assert any(line.startswith("  - TENANTS_POOL_SIZE: ") for line in said)
    assert any(line.startswith("  - TENANTS_STRATEGY: ") for line in said)


def test_taken_ports(squatter: int, tmp_path: Path) -> None:
    fmt = "json"
    env = {
        "TENANTS_MIGRATIONS_DIR": str(FIXTURES / "ok"),
        "TENANTS_DATA_DIR": str(tmp_path / "data"),
        "TENANTS_LOG_FORMAT": fmt,
        "TENANTS_EMBEDDED_PORT": str(squatter),
    }
    http = serve(env, port=squatter)
    assert http.returncode == 1, http.stderr
    assert paragraph(http.stderr, fmt) == [
        f"The service did not start: it cannot listen on 127.0.0.1:{squatter} (Address already in use).",
        "Another program may be using that port: stop it, or choose another with --port.",
    ]

    embedded = serve(env)
    assert embedded.returncode == 1, embedded.stderr
    said = paragraph(embedded.stderr, fmt)
    assert said[0].startswith(
        f"The service did not start: port {squatter} on 127.0.0.1, asked for (TENANTS_EMBEDDED_PORT) for the "
        f"embedded PostgreSQL in {tmp_path / 'data'}, is in use by another program: stop that program, or choose "
        "another port with TENANTS_EMBEDDED_PORT"
    )
    assert not (tmp_path / "data" / "pgdata").exists()  # refused before initdb


def test_unset_log_format_is_text_on_a_terminal_and_json_otherwise(tmp_path: Path) -> None:
    """Without TENANTS_LOG_FORMAT: a person at a terminal reads text lines; a file or collector gets JSON."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_no_zero.sql").write_text("SELECT 1;\n")
    env = {"TENANTS_MIGRATIONS_DIR": str(folder), "TENANTS_DATA_DIR": str(tmp_path / "data")}
    assert paragraph(serve(env).stderr, "json")  # stderr is a pipe here

    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(free_port())],
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    ) as proc:
        os.close(terminal)
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while chunk := os.read(controller, 4096):
                seen += chunk
        assert proc.wait(timeout=60) == 1
    os.close(controller)
    text = seen.decode().replace("\r\n", "\n")
    assert not any(line.startswith("{") for line in text.splitlines()), text
    said = paragraph(text, "text")
    assert said[0] == f"The service did not start: the migrations folder {folder} is not valid."
