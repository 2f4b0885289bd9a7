"""The README is part of the product: its commands and its settings table must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import ClientSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    fields = [*Settings.model_fields, *ClientSettings.model_fields]
    missing = [f"TENANTS_{name.upper()}" for name in fields if f"`TENANTS_{name.upper()}`" not in README]
    assert missing == []


def test_no_documented_setting_is_unknown() -> None:
    known = {f"TENANTS_{name.upper()}" for name in [*Settings.model_fields, *ClientSettings.model_fields]}
    documented = set(re.findall(r"^\| `(TENANTS_[A-Z_]+)`", README, flags=re.MULTILINE))
    assert documented - known == set()


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, flags=re.DOTALL)
    test_command = blocks[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()
