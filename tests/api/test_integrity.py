"""Integrity of applied migrations over HTTP: edited files, repairs that accept them, the status filter, the
Drizzle journal at start, and the whole story an operator lives through when files change under released tenants."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service import cli
from service.config import Settings
from service.errors import MigrationSetInvalid
from service.history import checks
from service.store.db import with_database
from tests.conftest import DEFAULT_MIGRATIONS, FIXTURES

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]

PROBLEM = "application/problem+json"
EDITED = FIXTURES / "edited_applied"


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


async def fetch(pg_url: str, database: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def create(client: httpx.AsyncClient, *ids: str) -> None:
    for tenant_id in ids:
        r = await client.post("/tenants", json={"id": tenant_id})
        assert r.status_code == 201, r.text


async def listed(client: httpx.AsyncClient, **params: Any) -> tuple[list[str], str | None]:
    r = await client.get("/tenants", params=params)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["items"]], r.json()["next"]


def edit_0001(folder: Path) -> None:
    shutil.copy(EDITED / "edited" / "0001_account_name.sql", folder / "0001_account_name.sql")


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A writable copy of the two-file history whose 0001 the tests edit after tenants ran it."""
    return Path(shutil.copytree(EDITED / "original", tmp_path / "migrations"))


OLD = checks.file_sha256(EDITED / "original" / "0001_account_name.sql")
NEW = checks.file_sha256(EDITED / "edited" / "0001_account_name.sql")


# -- repair ------------------------------------------------------------------------------------------------------


async def test_repair_accepts_the_edited_file_and_keeps_both_hashes(
    make_settings: MakeSettings, serve: Serve, small: Path, pg_url: str
) -> None:
    settings = make_settings(small)
    async with serve(settings) as client:
        await create(client, "acme")
    edit_0001(small)
    async with serve(settings) as client:
        schema = (await client.get("/tenants/acme/schema")).json()
        assert schema["status"] == "modified"
        assert schema["modified"] == [{"version": 1, "name": "account_name", "applied_sha256": OLD, "file_sha256": NEW}]
        assert_problem(await client.post("/tenants/acme/migrate"), 409, "history_mismatch")

        r = await client.post("/tenants/acme/repair", json={"accept": [{"version": 1, "sha256": NEW}]})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "up_to_date"
        applied = r.json()["applied"][1]
        assert (applied["sha256"], applied["accepted_sha256"]) == (OLD, NEW)
        # a replay records nothing more
        again = await client.post("/tenants/acme/repair", json={"accept": [{"version": 1, "sha256": NEW}]})
        assert again.status_code == 200, again.text
        assert (await client.post("/tenants/acme/migrate")).status_code == 200

    database = f"{settings.db_prefix}acme"
    assert await fetch(pg_url, database, "SELECT version, sha256 FROM _tenants.history ORDER BY version") == [
        (0, checks.file_sha256(small / "0000_accounts.sql")),
        (1, OLD),
    ]
    assert await fetch(pg_url, database, "SELECT version, old_sha256, new_sha256 FROM _tenants.repairs") == [
        (1, OLD, NEW)
    ]


async def test_a_repaired_file_edited_again_is_modified_against_the_accepted_hash(
    make_settings: MakeSettings, serve: Serve, small: Path
) -> None:
    settings = make_settings(small)
    async with serve(settings) as client:
        await create(client, "acme")
    edit_0001(small)
    async with serve(settings) as client:
        r = await client.post("/tenants/acme/repair", json={"accept": [{"version": 1, "sha256": NEW}]})
        assert r.status_code == 200, r.text
    (small / "0001_account_name.sql").write_text('ALTER TABLE "accounts" ADD COLUMN "name" varchar(300);\n')
    async with serve(settings) as client:
        schema = (await client.get("/tenants/acme/schema")).json()
    assert schema["status"] == "modified"
    assert schema["modified"][0]["applied_sha256"] == NEW


async def test_repair_rejects_a_stale_hash_and_unknown_versions_accepting_nothing(
    make_settings: MakeSettings, serve: Serve, small: Path, pg_url: str
) -> None:
    settings = make_settings(small)
    async with serve(settings) as client:
        await create(client, "acme")
    edit_0001(small)
    async with serve(settings) as client:
        body = {"accept": [{"version": 1, "sha256": NEW}, {"version": 0, "sha256": OLD}, {"version": 7, "sha256": NEW}]}
        problem = assert_problem(await client.post("/tenants/acme/repair", json=body), 409, "repair_rejected")
        assert problem["rejected"] == [
            {
                "version": 0,
                "reason": "sha256_mismatch",
                "message": f"the sha256 given is not 0000_accounts.sql's current hash "
                f"{checks.file_sha256(small / '0000_accounts.sql')}",
                "file_sha256": checks.file_sha256(small / "0000_accounts.sql"),
            },
            {
                "version": 7,
                "reason": "not_applied",
                "message": "not applied on this tenant; there is nothing to accept",
            },
        ]
        assert problem["detail"].startswith("nothing was accepted: version 0: the sha256 given is not")
        assert (await client.get("/tenants/acme/schema")).json()["status"] == "modified"

        twice = {"accept": [{"version": 1, "sha256": NEW}, {"version": 1, "sha256": NEW}]}
        problem = assert_problem(await client.post("/tenants/acme/repair", json=twice), 409, "repair_rejected")
        assert [(r["version"], r["reason"]) for r in problem["rejected"]] == [(1, "duplicate")]

        bad: dict[str, Any]
        for bad in ({"accept": []}, {"accept": [{"version": 1, "sha256": "abc"}]}, {"accept": [], "x": 1}):
            assert_problem(await client.post("/tenants/acme/repair", json=bad), 422, "invalid_request")
        assert_problem(
            await client.post("/tenants/nobody/repair", json={"accept": [{"version": 1, "sha256": NEW}]}),
            404,
            "tenant_not_found",
        )
    rows = await fetch(pg_url, f"{settings.db_prefix}acme", "SELECT count(*) FROM _tenants.repairs")
    assert rows == [(0,)]


async def test_a_file_that_is_gone_cannot_be_accepted(make_settings: MakeSettings, serve: Serve, small: Path) -> None:
    settings = make_settings(small)
    async with serve(settings) as client:
        await create(client, "acme")
    (small / "0001_account_name.sql").rename(small / "0001_renamed.sql")
    async with serve(make_settings(small, journal="ignore")) as client:
        body = {"accept": [{"version": 1, "sha256": OLD}]}
        problem = assert_problem(await client.post("/tenants/acme/repair", json=body), 409, "repair_rejected")
    assert [(r["version"], r["reason"]) for r in problem["rejected"]] == [(1, "no_file")]


async def test_a_tenant_migrated_before_repairs_existed_reads_and_repairs(
    make_settings: MakeSettings, serve: Serve, small: Path, pg_url: str
) -> None:
    settings = make_settings(small)
    async with serve(settings) as client:
        await create(client, "acme")
    database = f"{settings.db_prefix}acme"
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        await conn.execute("DROP TABLE _tenants.repairs")
    finally:
        await conn.close()
    edit_0001(small)
    async with serve(settings) as client:
        assert (await client.get("/tenants/acme/schema")).json()["status"] == "modified"
        r = await client.post("/tenants/acme/repair", json={"accept": [{"version": 1, "sha256": NEW}]})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "up_to_date"
    assert await fetch(pg_url, database, "SELECT version, new_sha256 FROM _tenants.repairs") == [(1, NEW)]


# -- GET /tenants?status= ----------------------------------------------------------------------------------------


async def test_list_filters_by_live_schema_status(make_settings: MakeSettings, serve: Serve, small: Path) -> None:
    settings = make_settings(small)
    async with serve(settings) as client:
        await create(client, "a", "b", "c")
        assert await listed(client, status="up_to_date") == (["a", "b", "c"], None)
        assert await listed(client, status="modified") == ([], None)
    edit_0001(small)
    async with serve(settings) as client:
        r = await client.post("/tenants/b/repair", json={"accept": [{"version": 1, "sha256": NEW}]})
        assert r.status_code == 200, r.text
        assert await listed(client, status="modified") == (["a", "c"], None)
        assert await listed(client, status="up_to_date") == (["b"], None)
        assert await listed(client, status="modified", state="ready") == (["a", "c"], None)
        assert await listed(client, status="modified", state="failed") == ([], None)
        assert await listed(client, status="behind") == ([], None)
        # a page examines `limit` tenants: [a, b] holds one match, and the cursor goes on after b
        first, cursor = await listed(client, status="modified", limit=2)
        assert first == ["a"]
        assert cursor is not None
        assert await listed(client, status="modified", limit=2, cursor=cursor) == (["c"], None)
        assert await listed(client, status="up_to_date", limit=1) == ([], (await listed(client, limit=1))[1])
        assert_problem(await client.get("/tenants", params={"status": "drifting"}), 422, "invalid_request")


# -- the journal at start ----------------------------------------------------------------------------------------


async def test_the_service_refuses_to_start_on_journal_problems(make_settings: MakeSettings, serve: Serve) -> None:
    with pytest.raises(MigrationSetInvalid) as caught:
        async with serve(make_settings(FIXTURES / "journal_no_file")):
            pass
    assert caught.value.problems == [
        "meta/_journal.json lists 0001_account_name but 0001_account_name.sql does not exist"
    ]
    async with serve(make_settings(FIXTURES / "journal_no_file", journal="ignore")) as client:
        assert (await client.get("/migrations")).json()["latest_version"] == 0


# -- the whole story ---------------------------------------------------------------------------------------------


async def test_an_edited_released_file_and_a_sloppy_journal_are_caught_everywhere(
    make_settings: MakeSettings, serve: Serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = Path(shutil.copytree(DEFAULT_MIGRATIONS, tmp_path / "migrations"))
    async with serve(make_settings(folder)) as client:
        await create(client, "acme")
        assert (await client.get("/tenants/acme")).json()["version"] == 10

    # An operator edits the released 0003, adds 0011 journaled with a `when` older than 0010's (a branch generated
    # before 0010 and merged after it), and forgets to journal 0012.
    edited = folder / "0003_sessions_payment_fields.sql"
    index = 'CREATE INDEX "sessions_deposit_paid_idx" ON "sessions" USING btree ("deposit_paid");'
    edited.write_text(edited.read_text() + f"--> statement-breakpoint\n{index}")
    (folder / "0011_invoice_due_dates.sql").write_text('ALTER TABLE "invoices" ADD COLUMN "due_on" date;\n')
    (folder / "0012_client_vat_number.sql").write_text('ALTER TABLE "clients" ADD COLUMN "vat_number" varchar(50);\n')
    journal_path = folder / "meta" / "_journal.json"
    journal = json.loads(journal_path.read_text())
    day_before_0010 = journal["entries"][10]["when"] - 86_400_000
    journal["entries"].append(
        {"idx": 11, "version": "7", "when": day_before_0010, "tag": "0011_invoice_due_dates", "breakpoints": True}
    )
    journal_path.write_text(json.dumps(journal, indent=2))
    when_problem = (
        "0011_invoice_due_dates.sql: journal when 1769426516748 (2026-01-26T11:21:56Z) is not after "
        "0010_add_invoices_columns.sql's 1769512916748 (2026-01-27T11:21:56Z); drizzle-kit migrate would skip it"
    )
    unjournaled = (
        "0012_client_vat_number.sql is not in meta/_journal.json: it is never run (drizzle-kit runs only the "
        "journal's entries)"
    )

    # strict (the default): the service refuses to start, naming the journal problem (the unjournaled file is
    # only a warning: drizzle-kit would never run it either)
    with pytest.raises(MigrationSetInvalid) as caught:
        async with serve(make_settings(folder)):
            pass
    assert caught.value.problems == [when_problem]

    # ignore: it starts, shows the edit and the pending files, and refuses to migrate over the edit
    async with serve(make_settings(folder, journal="ignore")) as client:
        schema = (await client.get("/tenants/acme/schema")).json()
        assert schema["status"] == "modified"
        assert [m["version"] for m in schema["modified"]] == [3]
        assert [p["version"] for p in schema["pending"]] == [11, 12]
        problem = assert_problem(await client.post("/tenants/acme/migrate"), 409, "history_mismatch")
        assert (problem["modified"], problem["untracked"]) == ([3], [])
        after = (await client.get("/tenants/acme/schema")).json()
        assert after["current_version"] == 10
        assert [p["version"] for p in after["pending"]] == [11, 12]
        assert await listed(client, status="modified") == (["acme"], None)

    # and the pre-commit check names the edit (against tenants.sum), the journal problem, and warns of the orphan
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", str(folder)])
    assert exited.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        f"error: {when_problem}",
        "error: 0003_sessions_payment_fields.sql was edited after it was recorded in tenants.sum (recorded "
        f"8a058bbc66b9…, now {checks.file_sha256(edited)[:12]}…): a released migration must not change; revert the "
        "edit, or if it is intended run `tenantctl check --write-sum` and accept it on each tenant that ran it "
        "(POST /tenants/{id}/repair)",
        "error: 0011_invoice_due_dates.sql is not in tenants.sum: run `tenantctl check --write-sum` to add it",
        "error: 0012_client_vat_number.sql is not in tenants.sum: run `tenantctl check --write-sum` to add it",
        f"warning: {unjournaled}; if it is a new file, `tenantctl check --fix-journal` adds it",
        "4 problem(s), 1 warning(s)",
    ]
