"""Schema drift (GET /tenants/{id}/drift, POST /drift-checks, GET /migrations/{v}/schema) on a real server.

Each out-of-band change is made behind the service's back, then must be reported exactly once with the right
object kind, name and change. The small ``drift`` fixture set holds one of every object kind the snapshot reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.schema.expected import ExpectedSchemas
from tests.drift_support import DRIFT, app_running, create, drift_of, execute, provisioner_of

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

PROBLEM = "application/problem+json"


@pytest.fixture
def drift_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(DRIFT)


@pytest.fixture
async def drift_client(drift_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_running(drift_settings) as (_, client):
        yield client


async def test_fresh_tenant_is_clean(drift_client: httpx.AsyncClient) -> None:
    tenant = await create(drift_client, "fresh")
    body = await drift_of(drift_client, "fresh")
    assert body["tenant"] == "fresh"
    assert body["version"] == 2
    assert body["clean"] is True
    assert body["differences"] == []
    schema = (await drift_client.get("/tenants/fresh/schema")).json()
    assert schema["status"] == "up_to_date"
    assert schema["drift"]["clean"] is True
    assert schema["drift"]["checked_at"] == body["checked_at"]
    assert tenant["database"].endswith("fresh")


async def test_never_checked_tenant_has_no_drift(drift_client: httpx.AsyncClient) -> None:
    await create(drift_client, "unchecked")
    schema = (await drift_client.get("/tenants/unchecked/schema")).json()
    assert schema["drift"] is None
    assert schema["status"] == "up_to_date"


# (out-of-band SQL, object kind, name, change, the attributes a "changed" difference must name)
CHANGES: list[tuple[str, str, str, str, set[str]]] = [
    ("ALTER TABLE billing.invoices DROP COLUMN note", "column", "billing.invoices.note", "missing", set()),
    (
        "ALTER TABLE billing.invoices ALTER COLUMN note TYPE varchar(200)",
        "column",
        "billing.invoices.note",
        "changed",
        {"type"},
    ),
    (
        "ALTER TABLE billing.invoices ALTER COLUMN note SET NOT NULL",
        "column",
        "billing.invoices.note",
        "changed",
        {"nullable"},
    ),
    (
        "ALTER TABLE billing.invoices ALTER COLUMN amount SET DEFAULT 1",
        "column",
        "billing.invoices.amount",
        "changed",
        {"default"},
    ),
    ("DROP INDEX billing.invoices_account_id_idx", "index", "billing.invoices_account_id_idx", "missing", set()),
    ("CREATE INDEX notes_body_idx ON notes (body)", "index", "public.notes_body_idx", "unexpected", set()),
    (
        "CREATE TABLE scratchpad (id serial PRIMARY KEY, body text UNIQUE, account_id int REFERENCES accounts(id))",
        "table",
        "public.scratchpad",
        "unexpected",
        set(),
    ),
    ("DROP TABLE notes", "table", "public.notes", "missing", set()),
    ("DROP SCHEMA billing CASCADE", "schema", "billing", "missing", set()),
    (
        "DROP TYPE priority; CREATE TYPE priority AS ENUM ('high', 'normal', 'low')",
        "enum",
        "public.priority",
        "changed",
        {"labels"},
    ),
    (
        "CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$",
        "function",
        "public.touch_updated_at()",
        "changed",
        {"body_sha256"},
    ),
    (
        "ALTER TABLE notes DROP CONSTRAINT notes_account_id_accounts_id_fk, ADD CONSTRAINT "
        "notes_account_id_accounts_id_fk FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE",
        "foreign_key",
        "public.notes.notes_account_id_accounts_id_fk",
        "changed",
        {"definition"},
    ),
    (
        "ALTER TABLE billing.invoices DROP CONSTRAINT invoices_amount_check",
        "check",
        "billing.invoices.invoices_amount_check",
        "missing",
        set(),
    ),
    (
        "ALTER TABLE accounts DROP CONSTRAINT accounts_email_unique",
        "unique",
        "public.accounts.accounts_email_unique",
        "missing",
        set(),
    ),
    (
        "DROP TRIGGER accounts_touch_updated_at ON accounts",
        "trigger",
        "public.accounts.accounts_touch_updated_at",
        "missing",
        set(),
    ),
    (
        "DROP POLICY invoices_positive_account ON billing.invoices",
        "policy",
        "billing.invoices.invoices_positive_account",
        "missing",
        set(),
    ),
    ("ALTER TABLE billing.invoices DISABLE ROW LEVEL SECURITY", "table", "billing.invoices", "changed", {"rls"}),
    ("DROP VIEW billing.open_invoices", "view", "billing.open_invoices", "missing", set()),
    (
        "ALTER SEQUENCE billing.invoice_number_seq INCREMENT BY 10",
        "sequence",
        "billing.invoice_number_seq",
        "changed",
        {"increment"},
    ),
    (
        "DROP PROCEDURE billing.forget_sent(integer)",
        "function",
        "billing.forget_sent(IN days integer)",
        "missing",
        set(),
    ),
    ("CREATE EXTENSION pg_trgm", "extension", "pg_trgm", "unexpected", set()),
    (
        'ALTER TABLE accounts ALTER COLUMN name SET DATA TYPE text COLLATE "POSIX"',
        "column",
        "public.accounts.name",
        "changed",
        {"collation"},
    ),
]


@pytest.mark.parametrize(("sql", "kind", "name", "change", "fields"), CHANGES, ids=[c[2] + ":" + c[3] for c in CHANGES])
async def test_each_change_is_reported_once(
    drift_client: httpx.AsyncClient, pg_url: str, sql: str, kind: str, name: str, change: str, fields: set[str]
) -> None:
    tenant = await create(drift_client, "acme")
    await execute(pg_url, tenant["database"], sql)
    body = await drift_of(drift_client, "acme")
    assert body["clean"] is False
    assert [(d["object"], d["name"], d["change"]) for d in body["differences"]] == [(kind, name, change)]
    difference = body["differences"][0]
    if change == "changed":
        assert set(difference["expected"]) == set(difference["actual"]) == fields
        assert difference["expected"] != difference["actual"]
    elif change == "missing":
        assert difference["actual"] is None
        assert difference["expected"] is not None
    else:
        assert difference["expected"] is None
        assert difference["actual"] is not None


async def test_differences_are_sorted_stable_and_drive_status(drift_client: httpx.AsyncClient, pg_url: str) -> None:
    tenant = await create(drift_client, "acme")
    await execute(
        pg_url,
        tenant["database"],
        "DROP INDEX billing.invoices_status_idx; ALTER TABLE accounts ADD COLUMN nickname text;"
        "ALTER TABLE billing.invoices ALTER COLUMN amount DROP DEFAULT; CREATE TABLE zz_extra (id int)",
    )
    first = await drift_of(drift_client, "acme")
    second = await drift_of(drift_client, "acme")
    assert first["differences"] == second["differences"]
    assert [d["name"] for d in first["differences"]] == [
        "billing.invoices.amount",
        "billing.invoices_status_idx",
        "public.accounts.nickname",
        "public.zz_extra",
    ]
    schema = (await drift_client.get("/tenants/acme/schema")).json()
    assert schema["status"] == "drifted"
    assert schema["drift"]["clean"] is False
    assert schema["drift"]["checked_at"] == second["checked_at"]
    assert len(schema["drift"]["differences"]) == 4

    await execute(
        pg_url,
        tenant["database"],
        "CREATE INDEX invoices_status_idx ON billing.invoices USING btree (status); ALTER TABLE accounts DROP COLUMN "
        "nickname; ALTER TABLE billing.invoices ALTER COLUMN amount SET DEFAULT '0'; DROP TABLE zz_extra",
    )
    assert (await drift_of(drift_client, "acme"))["clean"] is True
    assert (await drift_client.get("/tenants/acme/schema")).json()["status"] == "up_to_date"


async def test_drift_errors(drift_client: httpx.AsyncClient) -> None:
    r = await drift_client.get("/tenants/nobody/drift")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["code"] == "tenant_not_found"
    r = await drift_client.get("/tenants/Bad-Id/drift")
    assert r.status_code == 422


async def test_migration_run_rechecks(make_settings: MakeSettings, migration_dir: MigrationDir, pg_url: str) -> None:
    directory = migration_dir("drift")
    held = directory.parent / "held"
    held.mkdir()
    (directory / "0002_notes.sql").rename(held / "0002_notes.sql")
    settings = make_settings(directory)
    async with app_running(settings) as (_, client):
        tenant = await create(client, "acme")
        assert (await client.get("/tenants/acme/schema")).json()["drift"] is None
    (held / "0002_notes.sql").rename(directory / "0002_notes.sql")
    async with app_running(settings) as (_, client):
        r = await client.post("/tenants/acme/migrate")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["current_version"] == 2
        assert body["status"] == "up_to_date"
        assert body["drift"]["clean"] is True
        # A run with nothing pending re-checks too, and reports what changed meanwhile.
        await execute(pg_url, tenant["database"], "ALTER TABLE notes ADD COLUMN extra int")
        body = (await client.post("/tenants/acme/migrate")).json()
        assert body["status"] == "drifted"
        assert [d["name"] for d in body["drift"]["differences"]] == ["public.notes.extra"]


async def test_sweep_records_every_tenant_and_filters_drifted(drift_client: httpx.AsyncClient, pg_url: str) -> None:
    tenants = {t: await create(drift_client, t) for t in ("a1", "b2", "c3")}
    await execute(pg_url, tenants["b2"]["database"], "DROP INDEX billing.invoices_account_id_idx")
    r = await drift_client.post("/drift-checks")
    assert r.status_code == 200, r.text
    assert r.json() == {"checked": 3, "drifted": ["b2"], "skipped": []}
    for t in ("a1", "c3"):
        assert (await drift_client.get(f"/tenants/{t}/schema")).json()["drift"]["clean"] is True
    listed = await drift_client.get("/tenants", params={"status": "drifted"})
    assert listed.status_code == 200, listed.text
    assert [t["id"] for t in listed.json()["items"]] == ["b2"]


async def test_expected_schema_per_version(drift_client: httpx.AsyncClient) -> None:
    r = await drift_client.get("/migrations/1/schema")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1
    assert body["file"] == "0001_invoice_status.sql"
    objects = body["objects"]
    assert "billing.invoices.status" in objects["column"]
    assert "public.notes" not in objects["table"]
    assert objects["enum"]["public.plan"] == {"labels": ["free", "pro", "team"]}
    assert not [n for kind in objects.values() for n in kind if n.startswith(("_tenants", "drizzle"))]
    latest = (await drift_client.get("/migrations/2/schema")).json()["objects"]
    assert "public.notes" in latest["table"]
    r = await drift_client.get("/migrations/3/schema")
    assert r.status_code == 404
    assert r.json()["code"] == "version_not_found"


async def scratch_databases(pg_url: str, settings: Settings) -> list[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", settings.catalog_database + "_scratch_"
        )
        return [r["datname"] for r in rows]
    finally:
        await conn.close()


async def test_expected_schemas_are_built_once_and_survive_restart(
    drift_settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ExpectedSchemas, "_shared", {})  # this test must see builds the session cache would hide
    async with app_running(drift_settings) as (app, client):
        expected = provisioner_of(app).drift.expected
        await create(client, "acme")
        await asyncio.gather(*(drift_of(client, "acme") for _ in range(3)))
        assert (await client.get("/migrations/0/schema")).status_code == 200
        assert expected.builds == 1
        assert await scratch_databases(pg_url, drift_settings) == []
    monkeypatch.setattr(ExpectedSchemas, "_shared", {})
    async with app_running(drift_settings) as (app, client):
        assert (await drift_of(client, "acme"))["clean"] is True
        assert (await client.get("/migrations/1/schema")).status_code == 200
        assert provisioner_of(app).drift.expected.builds == 0


async def test_orphaned_scratch_database_is_dropped_at_start(drift_settings: Settings, pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'CREATE DATABASE "{drift_settings.catalog_database}_scratch_deadbeef"')
    finally:
        await conn.close()
    async with app_running(drift_settings):
        assert await scratch_databases(pg_url, drift_settings) == []


async def test_default_history_tenant_is_clean(settings: Settings) -> None:
    """The shipped history, seeds included: a fresh tenant matches the replayed schema of every file."""
    async with app_running(settings) as (_, client):
        r = await client.post("/tenants", json={"id": "studio", "seed": {"admin_email": "a@studio.test"}})
        assert r.status_code == 201, r.text
        body = await drift_of(client, "studio")
        assert body["version"] == 10
        assert body["clean"] is True, body["differences"]


async def test_periodic_sweep(make_settings: MakeSettings, pg_url: str) -> None:
    async with app_running(make_settings(DRIFT, drift_interval=0.1)) as (_, client):
        tenant = await create(client, "acme")
        await execute(pg_url, tenant["database"], "DROP INDEX billing.invoices_account_id_idx")
        for _ in range(200):
            schema = (await client.get("/tenants/acme/schema")).json()
            if schema["status"] == "drifted":
                break
            await asyncio.sleep(0.05)
        assert schema["status"] == "drifted"
        assert schema["drift"]["differences"][0]["name"] == "billing.invoices_account_id_idx"


async def test_a_file_that_fails_to_replay_blocks_only_its_versions(
    make_settings: MakeSettings, migration_dir: MigrationDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = migration_dir("failing_stmt")
    held = directory.parent / "held"
    held.mkdir()
    (directory / "0002_notes.sql").rename(held / "0002_notes.sql")
    settings = make_settings(directory)
    async with app_running(settings) as (_, client):
        await create(client, "acme")
    (held / "0002_notes.sql").rename(directory / "0002_notes.sql")
    monkeypatch.setattr(ExpectedSchemas, "_shared", {})
    async with app_running(settings) as (app, client):
        for _ in range(2):
            r = await client.get("/migrations/2/schema")
            assert r.status_code == 409
            assert r.json()["code"] == "expected_schema_unbuildable"
            assert r.json()["file"] == "0002_notes.sql"
        body = await drift_of(client, "acme")
        assert (body["version"], body["clean"]) == (1, True)
        assert provisioner_of(app).drift.expected.builds == 1
