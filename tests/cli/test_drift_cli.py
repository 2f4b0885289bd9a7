"""`tenantctl drift`, `databases` and `adopt` against the real service in a child process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.drift_support import DRIFT, execute
from tests.process import ServiceProcess


@pytest.fixture
def service(pg_url: str, tag: str, cleanup: None, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        "TENANTS_DATABASE_URL": pg_url,
        "TENANTS_CATALOG_DATABASE": f"cat_{tag}",
        "TENANTS_DB_PREFIX": f"t{tag}_",
        "TENANTS_MIGRATIONS_DIR": str(DRIFT),
        "TENANTS_LOG_LEVEL": "warning",
    }
    process = ServiceProcess(env, tmp_path / "log").start()
    try:
        yield process
    finally:
        process.stop()


def tenantctl(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")} | {"TENANTS_URL": service.url}
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_drift_exits_1_when_drifted(service: ServiceProcess, pg_url: str, tag: str) -> None:
    assert httpx.post(f"{service.url}/tenants", json={"id": "acme"}, timeout=60).status_code == 201
    clean = tenantctl(service, "drift", "acme")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("acme  clean  version 2")

    asyncio.run(execute(pg_url, f"t{tag}_acme", "DROP INDEX billing.invoices_account_id_idx"))
    drifted = tenantctl(service, "drift", "acme")
    assert drifted.returncode == 1
    assert "missing     index        billing.invoices_account_id_idx" in drifted.stdout
    as_json = tenantctl(service, "drift", "acme", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["differences"][0]["name"] == "billing.invoices_account_id_idx"
    missing = tenantctl(service, "drift", "nobody")
    assert missing.returncode == 1
    assert missing.stderr.startswith("tenantctl: tenant_not_found")


def test_databases_and_adopt(service: ServiceProcess, pg_url: str, tag: str) -> None:
    asyncio.run(execute(pg_url, "postgres", f'CREATE DATABASE "t{tag}_found"'))
    listed = tenantctl(service, "databases")
    assert listed.returncode == 0, listed.stderr
    assert f"t{tag}_found" in listed.stdout
    assert listed.stdout.split("\n")[0].split() == ["SERVER", "DATABASE", "KIND", "TENANT", "HISTORY", "VERSION"]
    servers = tenantctl(service, "servers")
    assert servers.returncode == 0, servers.stderr
    assert servers.stdout.split("\n")[1].split()[:4] == ["default", "0", "-", "ok"]
    adopted = tenantctl(service, "adopt", "found", "--database", f"t{tag}_found", "--migrate")
    assert adopted.returncode == 0, adopted.stderr
    assert adopted.stdout.startswith("found  up_to_date  version 2/2")
