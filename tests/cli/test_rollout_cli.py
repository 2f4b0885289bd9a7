"""``tenantctl rollout`` and ``rollout-status`` against the real service: progress, exit codes, JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from service.config import Settings
from tests.cli.test_cli import base_env, start_service, tenantctl
from tests.conftest import running

FAIL_ON_BAD = (
    "DO $$ BEGIN IF current_database() ~ '_bad' THEN RAISE EXCEPTION 'boom'; END IF; END $$;\n"
    '--> statement-breakpoint\nALTER TABLE "accounts" ADD COLUMN "plan" text;\n'
)


async def test_rollout_commands(
    make_settings: Callable[..., Settings],
    migration_dir: Callable[[str], Path],
    pg_url: str,
    tag: str,
    tmp_path: Path,
) -> None:
    migrations = migration_dir("ok")
    async with running(make_settings(migrations)) as client:
        answers = await asyncio.gather(*(client.post("/tenants", json={"id": i}) for i in ("ok1", "ok2", "bad1")))
        assert {a.status_code for a in answers} == {201}
    (migrations / "0002_plan.sql").write_text(FAIL_ON_BAD)
    env = base_env(
        TENANTS_DATABASE_URL=pg_url,
        TENANTS_CATALOG_DATABASE=f"cat_{tag}",
        TENANTS_DB_PREFIX=f"t{tag}_",
        TENANTS_MIGRATIONS_DIR=str(migrations),
        TENANTS_LOG_LEVEL="warning",
    )
    service = start_service(env, tmp_path / "server.log")
    try:
        url = service.url
        good = tenantctl(url, "rollout", "--wait", "--tenant", "ok2", "--tenant", "ok1", "--canary", "1")
        assert good.returncode == 0, good.stderr
        assert good.stdout.startswith("rollout 1  succeeded  to version 2  2 tenant(s): 2 done, 0 failed")

        bad = tenantctl(url, "rollout", "--wait", "--json", "--canary", "0")
        assert bad.returncode == 1, bad.stderr
        body = json.loads(bad.stdout)
        assert (body["state"], body["total"], body["failed"]) == ("failed", 1, 1)
        assert body["tenants"][0]["id"] == "bad1"

        status = tenantctl(url, "rollout-status", str(body["id"]))
        assert status.returncode == 1
        lines = status.stdout.splitlines()
        assert lines[1].split() == ["TENANT", "STATE", "FROM", "MS", "ERROR"]
        assert lines[2].split()[:3] == ["bad1", "failed", "1"]
        assert "migration_failed: " in lines[2]

        first = tenantctl(url, "rollout-status", "1", "--json")
        assert first.returncode == 0, first.stderr
        assert [(t["id"], t["canary"]) for t in json.loads(first.stdout)["tenants"]] == [("ok2", True), ("ok1", False)]

        finished = tenantctl(url, "rollout-cancel", "1")
        assert (finished.returncode, finished.stderr.split(":")[:2]) == (1, ["tenantctl", " rollout_finished"])
        assert tenantctl(url, "rollout", "--concurrency", "0").returncode == 2

        # a rebalance is a rollout too (of moves): with one server there is nothing to even out
        even = tenantctl(url, "rebalance", "--wait")
        assert even.returncode == 0, even.stderr
        assert even.stdout.startswith("rollout 3  succeeded  rebalance  0 tenant(s): 0 done")
        listed = json.loads(tenantctl(url, "rollouts", "list", "--json").stdout)
        assert [(r["id"], r["kind"], r["to_version"]) for r in listed][:2] == [
            (3, "rebalance", None),
            (2, "migrate", 2),
        ]
    finally:
        service.stop()
