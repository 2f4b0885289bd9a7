"""Databases made outside the service: discovery (GET /databases) and adoption (POST /tenants/{id}/adopt).

The databases here are made the way a setup script would: CREATE DATABASE from the default template, the files'
statements run by hand, with or without a history table (ours, or drizzle's rows written with drizzle's hashes).
Every database name carries the test's tag, so the conftest cleanup drops them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.history import runner
from service.history.migrations import MigrationSet, load, plan
from service.store.db import with_database
from tests.drift_support import DRIFT, app_running, drift_of

MakeSettings = Callable[..., Settings]
DEFAULT = Path(__file__).resolve().parents[2] / "migrations"
PROBLEM = "application/problem+json"
DRIZZLE_TABLE = """CREATE SCHEMA IF NOT EXISTS drizzle;
CREATE TABLE IF NOT EXISTS drizzle.__drizzle_migrations (
    id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint
)"""


async def make_database(pg_url: str, name: str) -> asyncpg.Connection:
    """A database as `createdb` makes it (from template1), and a connection to it."""
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return await asyncpg.connect(with_database(pg_url, name))


async def scripted(pg_url: str, name: str, migrations: MigrationSet, upto: int, extra: str = "") -> None:
    """Run files 0000..upto statement by statement, as a script would: no history of any kind."""
    conn = await make_database(pg_url, name)
    try:
        for migration in migrations.migrations[: upto + 1]:
            for statement in migration.statements:
                await conn.execute(statement.sql)
        if extra:
            await conn.execute(extra)
    finally:
        await conn.close()


async def fetch(pg_url: str, name: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    return body


@pytest.fixture
def drift_set() -> MigrationSet:
    return load(DRIFT)


@pytest.fixture
def drift_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(DRIFT)


@pytest.fixture
async def client(drift_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_running(drift_settings) as (_, c):
        yield c


async def test_discovery_classifies_every_database(
    client: httpx.AsyncClient, drift_settings: Settings, drift_set: MigrationSet, pg_url: str, tag: str
) -> None:
    prefix = drift_settings.db_prefix
    managed = (await client.post("/tenants", json={"id": "acme"})).json()
    await scripted(pg_url, f"{prefix}bare0", drift_set, 0)
    await scripted(pg_url, f"{prefix}odd", drift_set, 0, "DROP INDEX billing.invoices_account_id_idx")
    ours = await make_database(pg_url, f"x{tag}_ours")
    try:
        await runner.apply(ours, plan(drift_set.migrations[:2]))
    finally:
        await ours.close()
    await drizzled(pg_url, f"x{tag}_dz", drift_set, 1)
    await (await make_database(pg_url, f"x{tag}_misc")).close()
    await scripted(pg_url, f"x{tag}_shaped", drift_set, 0)  # a tenant's schema, but neither named nor recorded

    r = await client.get("/databases")
    assert r.status_code == 200, r.text
    items = {d["name"]: d for d in r.json()["items"]}
    assert not {"template0", "template1", "postgres"} & set(items)
    assert items[drift_settings.catalog_database] == entry(drift_settings.catalog_database, "internal", "none")
    assert items[managed["database"]] == {**entry(managed["database"], "managed", "tenants", 2), "tenant": "acme"}
    assert items[f"{prefix}bare0"] == entry(f"{prefix}bare0", "unmanaged", "none", 0, inferred=True)
    assert items[f"{prefix}odd"] == entry(f"{prefix}odd", "unmanaged", "none")
    assert items[f"x{tag}_ours"] == entry(f"x{tag}_ours", "unmanaged", "tenants", 1)
    assert items[f"x{tag}_dz"] == entry(f"x{tag}_dz", "unmanaged", "drizzle", 1)
    assert items[f"x{tag}_misc"] == entry(f"x{tag}_misc", "other", "none")
    assert items[f"x{tag}_shaped"] == entry(f"x{tag}_shaped", "other", "none")
    assert list(items) == sorted(items)


def entry(name: str, kind: str, history: str, version: int | None = None, *, inferred: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "tenant": None,
        "history": history,
        "version": version,
        "inferred": inferred,
        "server": "default",
    }


async def drizzled(pg_url: str, name: str, migrations: MigrationSet, upto: int) -> None:
    """What drizzle-kit migrate leaves: the files run, and one row per file with its raw-bytes sha256."""
    await scripted(pg_url, name, migrations, upto)
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:
        await conn.execute(DRIZZLE_TABLE)
        for migration in migrations.migrations[: upto + 1]:
            await conn.execute(
                "INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ($1, $2)",
                migration.drizzle_hash,
                1_700_000_000_000 + migration.version,
            )
    finally:
        await conn.close()


async def test_incident_bare_database_at_0_is_adopted_migrated_and_clean(settings: Settings, pg_url: str) -> None:
    """A setup script made the database with 0000 only and no history: found at 0, adopted, brought to latest."""
    name = f"{settings.db_prefix}16"
    await scripted(pg_url, name, load(DEFAULT), 0)
    async with app_running(settings) as (_, client):
        found = {d["name"]: d for d in (await client.get("/databases")).json()["items"]}
        assert found[name] == entry(name, "unmanaged", "none", 0, inferred=True)

        r = await client.post("/tenants/org16/adopt", json={"database": name, "migrate": True})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/tenants/org16"
        body = r.json()
        assert body["database"] == name
        assert body["status"] == "up_to_date"
        assert body["current_version"] == 10
        assert [a["how"] for a in body["applied"]] == ["baselined"] + ["applied"] * 10
        assert body["drift"]["clean"] is True, body["drift"]
        assert (await drift_of(client, "org16"))["clean"] is True
        tenant = (await client.get("/tenants/org16")).json()
        assert (tenant["database"], tenant["state"], tenant["version"]) == (name, "ready", 10)
        found = {d["name"]: d for d in (await client.get("/databases")).json()["items"]}
        assert found[name]["kind"] == "managed"
        assert found[name]["tenant"] == "org16"


async def test_adopt_database_with_our_history(
    client: httpx.AsyncClient, drift_set: MigrationSet, pg_url: str, tag: str
) -> None:
    name = f"x{tag}_ours"
    conn = await make_database(pg_url, name)
    try:
        await runner.apply(conn, plan(drift_set.migrations[:2]))
    finally:
        await conn.close()
    r = await client.post("/tenants/ours/adopt", json={"database": name})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["current_version"], body["drift"]) == ("behind", 1, None)
    assert [a["how"] for a in body["applied"]] == ["applied", "applied"]
    r = await client.post("/tenants/ours/migrate")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "up_to_date"
    assert r.json()["drift"]["clean"] is True


async def test_adopt_drizzle_database(
    client: httpx.AsyncClient, drift_set: MigrationSet, pg_url: str, tag: str
) -> None:
    name = f"x{tag}_dz"
    await drizzled(pg_url, name, drift_set, 1)
    r = await client.post("/tenants/dz/adopt", json={"database": name, "migrate": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(a["version"], a["how"]) for a in body["applied"]] == [(0, "baselined"), (1, "baselined"), (2, "applied")]
    assert body["status"] == "up_to_date"
    assert body["drift"]["clean"] is True
    rows = await fetch(pg_url, name, "SELECT count(*) AS n FROM drizzle.__drizzle_migrations")
    assert rows[0]["n"] == 2  # drizzle's own record is left as it was


async def test_adopt_drizzle_database_with_unknown_rows_is_refused(
    client: httpx.AsyncClient, drift_set: MigrationSet, pg_url: str, tag: str
) -> None:
    name = f"x{tag}_dz"
    await drizzled(pg_url, name, drift_set, 0)
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:
        await conn.execute("INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('feed', 1)")
    finally:
        await conn.close()
    body = assert_problem(await client.post("/tenants/dz/adopt", json={"database": name}), 409, "history_mismatch")
    assert body["unknown_hashes"] == ["feed"]
    assert (await client.get("/tenants/dz")).status_code == 404


async def test_adopt_bare_database_matching_no_version(
    client: httpx.AsyncClient, drift_settings: Settings, drift_set: MigrationSet, pg_url: str
) -> None:
    name = f"{drift_settings.db_prefix}odd"
    await scripted(pg_url, name, drift_set, 1, "DROP INDEX billing.invoices_account_id_idx")
    body = assert_problem(await client.post("/tenants/odd/adopt", json={"database": name}), 409, "adoption_ambiguous")
    assert body["closest_version"] == 1
    assert body["matching_versions"] == []
    assert [(d["object"], d["name"], d["change"]) for d in body["differences"]] == [
        ("index", "billing.invoices_account_id_idx", "missing")
    ]
    assert (await client.get("/tenants/odd")).status_code == 404
    assert await fetch(pg_url, name, "SELECT 1 FROM pg_namespace WHERE nspname = '_tenants'") == []

    r = await client.post("/tenants/odd/adopt", json={"database": name, "baseline_version": 1})
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(a["version"], a["how"]) for a in body["applied"]] == [(0, "baselined"), (1, "baselined")]
    assert (body["status"], body["drift"]) == ("behind", None)  # adopting without migrating records no check
    assert (await drift_of(client, "odd"))["clean"] is False


async def test_adopted_data_is_preserved(
    client: httpx.AsyncClient, drift_settings: Settings, drift_set: MigrationSet, pg_url: str
) -> None:
    name = f"{drift_settings.db_prefix}busy"
    await scripted(
        pg_url,
        name,
        drift_set,
        0,
        "INSERT INTO accounts (email, name, plan) VALUES ('a@x.test', 'A', 'pro'), ('b@x.test', 'B', 'free');"
        "INSERT INTO billing.invoices (account_id, amount, note) SELECT id, 12.5, email FROM accounts",
    )
    before = await fetch(pg_url, name, "SELECT id, email::text, name, plan::text FROM accounts ORDER BY id")
    r = await client.post("/tenants/busy/adopt", json={"database": name, "migrate": True})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "up_to_date"
    assert await fetch(pg_url, name, "SELECT id, email::text, name, plan::text FROM accounts ORDER BY id") == before
    invoices = await fetch(pg_url, name, "SELECT amount, note, status FROM billing.invoices ORDER BY id")
    assert [tuple(r) for r in invoices] == [(12.5, "a@x.test", "draft"), (12.5, "b@x.test", "draft")]


async def test_adopt_empty_database_applies_everything(
    client: httpx.AsyncClient, drift_settings: Settings, pg_url: str
) -> None:
    name = f"{drift_settings.db_prefix}empty"
    await (await make_database(pg_url, name)).close()
    r = await client.post("/tenants/empty/adopt", json={"database": name, "migrate": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert [a["how"] for a in body["applied"]] == ["applied"] * 3
    assert body["drift"]["clean"] is True


async def test_adoption_replay_conflicts_and_delete_forgets(
    client: httpx.AsyncClient, drift_settings: Settings, drift_set: MigrationSet, pg_url: str, tag: str
) -> None:
    name = f"{drift_settings.db_prefix}bare"
    await scripted(pg_url, name, drift_set, 2)
    assert (await client.post("/tenants/bare/adopt", json={"database": name})).status_code == 201
    replay = await client.post("/tenants/bare/adopt", json={"database": name})
    assert replay.status_code == 200, replay.text
    assert [a["version"] for a in replay.json()["applied"]] == [0, 1, 2]

    assert_problem(await client.post("/tenants/again/adopt", json={"database": name}), 409, "database_not_adoptable")
    other = f"x{tag}_other"
    await (await make_database(pg_url, other)).close()
    assert_problem(await client.post("/tenants/bare/adopt", json={"database": other}), 409, "tenant_exists")
    assert_problem(
        await client.post("/tenants/x/adopt", json={"database": drift_settings.catalog_database}),
        409,
        "database_not_adoptable",
    )
    assert_problem(await client.post("/tenants/x/adopt", json={"database": "template1"}), 409, "database_not_adoptable")
    assert_problem(await client.post("/tenants/x/adopt", json={"database": f"x{tag}_nope"}), 404, "database_not_found")
    assert_problem(await client.post("/tenants/x/adopt", json={"database": 'bad"name'}), 422, "invalid_request")
    assert_problem(
        await client.post("/tenants/x/adopt", json={"database": other, "baseline_version": 7}), 422, "invalid_request"
    )

    r = await client.delete("/tenants/bare", params={"confirm": "bare"})
    assert r.status_code == 204, r.text
    assert (await client.get("/tenants/bare")).status_code == 404
    items = {d["name"]: d for d in (await client.get("/databases")).json()["items"]}
    # Forgotten, not dropped, and given back as it was: the history schema adoption added is gone with it.
    assert items[name] == entry(name, "unmanaged", "none", 2, inferred=True)
    rows = await fetch(pg_url, name, "SELECT count(*) AS n FROM pg_namespace WHERE nspname = '_tenants'")
    assert rows[0]["n"] == 0
