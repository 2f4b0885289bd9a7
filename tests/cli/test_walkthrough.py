"""The README's Quick start walkthrough, run top to bottom as a user would, against the embedded default.

The block after the ``<!-- walkthrough … -->`` marker is run by bash (``set -euo pipefail``), with only what a
user sets: ``TENANTS_DATA_DIR`` (a temporary data directory: the embedded PostgreSQL, whatever its port and
password rules), ``TENANTS_MIGRATIONS_DIR`` (a temporary copy of the shipped folder, so ``tenantctl new`` writes
there) and ``TENANTS_URL`` (the service on a free port). The block's "restart" comment line is where a user
restarts ``tenantctl serve``: the test does the same there. Everything is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import _kill_leftovers
from tests.conftest import DEFAULT_MIGRATIONS, ROOT
from tests.process import ServiceProcess

pytestmark = pytest.mark.timeout(600)

MARKER = "<!-- walkthrough:"
RESTART = re.compile(r"^# .*restart `tenantctl serve`.*$", re.MULTILINE)


def walkthrough() -> tuple[str, str]:
    """The block's commands before and after its restart line."""
    readme = (ROOT / "README.md").read_text()
    assert MARKER in readme, "the README lost its walkthrough marker"
    block = re.search(r"```sh\n(.*?)\n```", readme[readme.index(MARKER) :], flags=re.DOTALL)
    assert block is not None
    parts = RESTART.split(block[1])
    assert len(parts) == 2, "the walkthrough needs exactly one restart line"
    return parts[0], parts[1]


def run(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail -x\n{script}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"walkthrough step failed\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done


@pytest.fixture
def home() -> Iterator[Path]:
    """A private directory outside /root (the embedded cluster's user must reach it), removed afterwards."""
    shm = Path("/dev/shm")  # noqa: S108 - only the parent of a private mkdtemp directory
    path = Path(tempfile.mkdtemp(prefix="tenants-walkthrough-", dir=shm if shm.is_dir() else None))
    try:
        yield path
    finally:
        _kill_leftovers(path)
        shutil.rmtree(path, ignore_errors=True)


def test_the_readme_walkthrough_runs_top_to_bottom(home: Path) -> None:
    before, after = walkthrough()
    folder = home / "migrations"
    shutil.copytree(DEFAULT_MIGRATIONS, folder)
    settings = {"TENANTS_DATA_DIR": str(home / "data"), "TENANTS_MIGRATIONS_DIR": str(folder)}
    log = home / "server.log"
    service = ServiceProcess({**settings, "TENANTS_LOG_LEVEL": "warning"}, log)
    user = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTS_", "PG"))}
    user.update(settings, TENANTS_URL=service.url, PATH=f"{Path(sys.executable).parent}:{user.get('PATH', '')}")
    try:
        service.start(timeout=120)
        first = run(before, user, home)
        assert "0011_add_client_vat.sql" in first.stdout
        assert (folder / "0011_add_client_vat.sql").is_file()
        assert service.stop() == 0

        service.start(timeout=120)
        run(after, user, home)
        tenants = subprocess.run(
            ["tenantctl", "list", "--json"], env=user, capture_output=True, text=True, timeout=60, check=True
        )
        # Both went through the rollout to the new file; acme2 was deleted at the end (kept for undelete).
        assert [(t["id"], t["state"], t["version"]) for t in json.loads(tenants.stdout)] == [
            ("acme", "ready", 11),
            ("acme2", "deleted", 11),
        ]
    finally:
        code = service.stop()
        assert code == 0, log.read_text(errors="replace")[-3000:]
    assert "Traceback" not in log.read_text(errors="replace")
