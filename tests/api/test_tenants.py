"""The tenant lifecycle over HTTP, against a real PostgreSQL: create, replay, conflicts, concurrency, seeds, list,
async creation, delete, restart and crash recovery."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.errors import MigrationSetInvalid
from service.history.migrations import load
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "migrations"
PROBLEM = "application/problem+json"


# -- helpers ---------------------------------------------------------------------------------------------------


async def fetch(pg_url: str, database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def databases(pg_url: str, prefix: str) -> set[str]:
    rows = await fetch(pg_url, "postgres", "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
    return {r["datname"] for r in rows}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def wait_state(
    client: httpx.AsyncClient, tenant_id: str, *, until: set[str], seconds: float = 30
) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        while True:
            r = await client.get(f"/tenants/{tenant_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["state"] in until:
                return body
            await asyncio.sleep(0.05)


@pytest.fixture
def ok_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(FIXTURES / "ok")


@pytest.fixture
async def ok_client(ok_settings: Settings, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(ok_settings) as client:
        yield client


# -- the default history -----------------------------------------------------------------------------------------


async def test_create_applies_the_whole_default_history(
    client: httpx.AsyncClient, settings: Settings, pg_url: str
) -> None:
    body = {"id": "acme", "name": "Acme Studio", "seed": {"admin_email": "  Admin@Acme.Test "}}
    r = await client.post("/tenants", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/tenants/acme"
    tenant = r.json()
    database = f"{settings.db_prefix}acme"
    assert tenant["id"] == "acme"
    assert tenant["name"] == "Acme Studio"
    assert tenant["database"] == database
    assert tenant["state"] == "ready"
    assert tenant["version"] == tenant["latest_version"] == 10
    assert tenant["error"] is None

    migrations = (await client.get("/migrations")).json()
    assert migrations["latest_version"] == 10
    s = await client.get("/tenants/acme/schema")
    assert s.status_code == 200, s.text
    schema = s.json()
    assert schema["status"] == "up_to_date"
    assert schema["current_version"] == schema["latest_version"] == 10
    assert schema["pending"] == []
    assert schema["modified"] == schema["untracked"] == schema["out_of_order"] == []
    assert schema["error"] is None
    assert len(schema["applied"]) == 11
    assert [(a["version"], a["name"], a["sha256"]) for a in schema["applied"]] == [
        (m["version"], m["name"], m["sha256"]) for m in migrations["items"]
    ]
    assert all(a["how"] == "applied" for a in schema["applied"])

    # Every table the history creates is in the tenant's database, and nothing else in public.
    expected_tables: set[str] = set()
    for path in sorted((ROOT / "migrations").glob("*.sql")):
        expected_tables |= set(re.findall(r'CREATE TABLE "([a-z_]+)"', path.read_text()))
    assert len(expected_tables) == 30
    rows = await fetch(pg_url, database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert {r["tablename"] for r in rows} == expected_tables

    # The history table holds exactly what the schema endpoint reported, with the file hashes from disk.
    ms = load(ROOT / "migrations")
    history = await fetch(pg_url, database, "SELECT version, file, sha256, drizzle_hash FROM _tenants.history")
    assert sorted((r["version"], r["file"], r["sha256"], r["drizzle_hash"]) for r in history) == [
        (m.version, m.file, m.sha256, m.drizzle_hash) for m in ms.migrations
    ]
    seeds = await fetch(pg_url, database, "SELECT file, sha256 FROM _tenants.seeds ORDER BY file")
    assert [(r["file"], r["sha256"]) for r in seeds] == [(s.file, s.sha256) for s in ms.seeds]

    # The seeds ran with the tenant's values.
    users = await fetch(
        pg_url,
        database,
        """SELECT u.email, r.name AS role FROM users u
           JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id""",
    )
    assert [(u["email"], u["role"]) for u in users] == [("admin@acme.test", "admin")]
    settings_rows = await fetch(
        pg_url, database, "SELECT key, value #>> '{}' AS v FROM settings WHERE key IN ('tenant.id', 'studio.name')"
    )
    assert {r["key"]: r["v"] for r in settings_rows} == {"tenant.id": "acme", "studio.name": "Acme Studio"}
    roles = await fetch(pg_url, database, "SELECT count(*) AS n FROM roles")
    assert roles[0]["n"] == 5
    # The new enum value of 0006 is usable: the chain committed after it.
    labels = await fetch(pg_url, database, "SELECT unnest(enum_range(NULL::session_status))::text AS v")
    assert "no_show" in {r["v"] for r in labels}


# -- replay and conflicts ------------------------------------------------------------------------------------------


async def test_replay_returns_200_and_changes_nothing(ok_client: httpx.AsyncClient) -> None:
    body = {"id": "acme", "name": "Acme", "seed": {"email": "a@acme.test"}}
    first = await ok_client.post("/tenants", json=body)
    assert first.status_code == 201, first.text
    again = await ok_client.post("/tenants", json={"seed": {"email": "a@acme.test"}, "name": "Acme", "id": "acme"})
    assert again.status_code == 200, again.text
    assert again.headers["location"] == "/tenants/acme"
    assert again.json()["created_at"] == first.json()["created_at"]
    assert again.json()["state"] == "ready"


async def test_name_defaults_to_the_id_and_replay_matches(ok_client: httpx.AsyncClient) -> None:
    r = await ok_client.post("/tenants", json={"id": "acme"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "acme"
    assert (await ok_client.post("/tenants", json={"id": "acme", "seed": {}})).status_code == 200


@pytest.mark.parametrize(
    "other",
    [{"id": "acme", "name": "Other"}, {"id": "acme", "name": "Acme", "seed": {"email": "b@acme.test"}}],
)
async def test_same_id_other_body_is_409(ok_client: httpx.AsyncClient, other: dict[str, Any]) -> None:
    r = await ok_client.post("/tenants", json={"id": "acme", "name": "Acme"})
    assert r.status_code == 201, r.text
    conflict = await ok_client.post("/tenants", json=other)
    body = assert_problem(conflict, 409, "tenant_exists")
    assert body["tenant"] == "acme"
    assert (await ok_client.get("/tenants/acme")).json()["name"] == "Acme"


async def test_twenty_concurrent_creates_make_one_database(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    body = {"id": "rush", "name": "Rush"}
    answers = await asyncio.gather(*(ok_client.post("/tenants", json=body) for _ in range(20)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 19 + [201], [r.text for r in answers if r.status_code >= 300]
    assert all(r.json()["state"] == "ready" for r in answers)
    assert await databases(pg_url, ok_settings.db_prefix) == {f"{ok_settings.db_prefix}rush"}
    accounts = await fetch(pg_url, f"{ok_settings.db_prefix}rush", "SELECT email FROM accounts")
    assert [a["email"] for a in accounts] == ["rush@example.test"]  # seeded exactly once


async def test_concurrent_creates_of_different_ids(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    ids = [f"t{i}" for i in range(6)]
    answers = await asyncio.gather(*(ok_client.post("/tenants", json={"id": i}) for i in ids))
    assert [r.status_code for r in answers] == [201] * 6, [r.text for r in answers]
    assert await databases(pg_url, ok_settings.db_prefix) == {ok_settings.db_prefix + i for i in ids}


async def test_waiter_past_the_bound_gets_tenant_busy(make_settings: MakeSettings, serve: Serve, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "ok", busy_timeout=0.5)
    async with serve(settings) as client:
        # Another replica holds the tenant: the same advisory lock, taken from outside the process.
        other = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
        try:
            await other.execute("SELECT pg_advisory_lock($1, hashtext($2))", 0x7E4A1, "acme")
            r = await client.post("/tenants", json={"id": "acme"})
            assert_problem(r, 409, "tenant_busy")
            assert (await client.get("/tenants/acme")).status_code == 404
        finally:
            await other.close()
        assert (await client.post("/tenants", json={"id": "acme"})).status_code == 201


# -- ids -------------------------------------------------------------------------------------------------------------


async def test_numeric_string_id(ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str) -> None:
    r = await ok_client.post("/tenants", json={"id": "16"})
    assert r.status_code == 201, r.text
    assert r.json()["database"] == f"{ok_settings.db_prefix}16"
    assert r.headers["location"] == "/tenants/16"
    assert await databases(pg_url, ok_settings.db_prefix) == {f"{ok_settings.db_prefix}16"}
    assert (await ok_client.get("/tenants/16")).json()["id"] == "16"


async def test_longest_id(ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str) -> None:
    tenant_id = "a" * 40
    r = await ok_client.post("/tenants", json={"id": tenant_id})
    assert r.status_code == 201, r.text
    assert await databases(pg_url, ok_settings.db_prefix) == {ok_settings.db_prefix + tenant_id}


# -- seeds -----------------------------------------------------------------------------------------------------------


async def test_hostile_values_are_stored_verbatim(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    name = "O'Brien\"; DROP TABLE accounts; --"
    email = "'); DROP DATABASE x; --"
    r = await ok_client.post("/tenants", json={"id": "obrien", "name": name, "seed": {"email": email}})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name
    rows = await fetch(pg_url, f"{ok_settings.db_prefix}obrien", "SELECT email, name FROM accounts")
    assert [(a["email"], a["name"]) for a in rows] == [(email, name)]
    assert (await ok_client.get("/tenants/obrien")).json()["name"] == name


async def test_unicode_and_newlines_in_values_are_stored_verbatim(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    name = "Studio Ü 🎧\nline two\t\\ $1 %s"
    r = await ok_client.post("/tenants", json={"id": "uni", "name": name, "seed": {"email": "ü@例え.jp"}})
    assert r.status_code == 201, r.text
    rows = await fetch(pg_url, f"{ok_settings.db_prefix}uni", "SELECT email, name FROM accounts")
    assert [(a["email"], a["name"]) for a in rows] == [("ü@例え.jp", name)]


@pytest.mark.parametrize(
    "body",
    [
        {"id": "nul", "seed": {"email": "a\x00b"}},
        {"id": "nul", "name": "a\x00b"},
    ],
)
async def test_nul_byte_in_a_value_is_422(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str, body: dict[str, Any]
) -> None:
    assert_problem(await ok_client.post("/tenants", json=body), 422, "invalid_request")
    assert await databases(pg_url, ok_settings.db_prefix) == set()
    assert (await ok_client.get("/tenants/nul")).status_code == 404


@pytest.mark.parametrize("key", ["1x", "A", "a-b", "a.b", "", "a" * 41])
async def test_seed_keys_that_cannot_be_setting_names_are_422(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str, key: str
) -> None:
    r = await ok_client.post("/tenants", json={"id": "keys", "seed": {key: "v"}})
    assert_problem(r, 422, "invalid_request")
    assert await databases(pg_url, ok_settings.db_prefix) == set()


async def test_seed_keys_reach_the_seed_files(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d = migration_dir("ok")
    (d / "seeds" / "0002_settings.sql").write_text(
        "CREATE TABLE seed_values (k text, v text);\n--> statement-breakpoint\n"
        "INSERT INTO seed_values VALUES ('id', current_setting('tenant.id')),"
        " ('_x', current_setting('tenant.seed._x', true)), ('a1', current_setting('tenant.seed.a1', true)),"
        " ('missing', current_setting('tenant.seed.missing', true));\n"
    )
    settings = make_settings(d)
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "k", "seed": {"_x": "under", "a1": ""}})
        assert r.status_code == 201, r.text
    rows = await fetch(pg_url, f"{settings.db_prefix}k", "SELECT k, v FROM seed_values")
    assert {r["k"]: r["v"] for r in rows} == {"id": "k", "_x": "under", "a1": "", "missing": None}


# -- reading ---------------------------------------------------------------------------------------------------------


async def test_get_unknown_tenant_is_404(ok_client: httpx.AsyncClient) -> None:
    body = assert_problem(await ok_client.get("/tenants/nobody"), 404, "tenant_not_found")
    assert body["tenant"] == "nobody"
    assert_problem(await ok_client.get("/tenants/nobody/schema"), 404, "tenant_not_found")


async def test_list_pages_follow_next(make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir) -> None:
    d = migration_dir("ok")
    settings = make_settings(d)
    ids = ["a1", "b2", "c3", "d4"]
    async with serve(settings) as client:
        for i in ids:
            assert (await client.post("/tenants", json={"id": i})).status_code == 201
    # A broken new version: the fifth tenant fails and is listed as failed.
    (d / "0002_broken.sql").write_text("SELECT * FROM nowhere;\n")
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "e5"})
        assert_problem(r, 500, "migration_failed")

        seen: list[str] = []
        pages = 0
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = await client.get("/tenants", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["items"]) <= 2
            seen += [t["id"] for t in body["items"]]
            pages += 1
            if body["next"] is None:
                break
            params = {"limit": 2, "cursor": body["next"]}
        assert seen == [*ids, "e5"]
        assert pages == 3

        everything = (await client.get("/tenants")).json()
        assert [t["id"] for t in everything["items"]] == [*ids, "e5"]
        assert everything["next"] is None
        assert all(t["latest_version"] == 2 for t in everything["items"])

        failed = (await client.get("/tenants", params={"state": "failed"})).json()
        assert [(t["id"], t["state"], t["error"]["code"]) for t in failed["items"]] == [
            ("e5", "failed", "migration_failed")
        ]
        ready = (await client.get("/tenants", params={"state": "ready", "limit": 3})).json()
        assert [t["id"] for t in ready["items"]] == ids[:3]
        assert ready["next"] is not None
        rest = (await client.get("/tenants", params={"state": "ready", "cursor": ready["next"]})).json()
        assert [t["id"] for t in rest["items"]] == ids[3:]
        assert rest["next"] is None
        assert (await client.get("/tenants", params={"state": "deleting"})).json() == {"items": [], "next": None}


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "!!!"},
        {"cursor": "QUNNRQ"},  # base64 of "ACME": decodes, but is not a tenant id
        {"cursor": ""},
        {"cursor": "x" * 65},
        {"limit": 0},
        {"limit": 501},
        {"limit": "two"},
        {"state": "sleeping"},
    ],
)
async def test_bad_list_parameters_are_422(ok_client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    assert_problem(await ok_client.get("/tenants", params=params), 422, "invalid_request")


# -- async creation --------------------------------------------------------------------------------------------------


async def test_respond_async_answers_202_then_becomes_ready(
    client: httpx.AsyncClient, settings: Settings, pg_url: str
) -> None:
    r = await client.post("/tenants", json={"id": "later"}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == "/tenants/later"
    assert r.headers["preference-applied"] == "respond-async"
    assert r.json()["state"] == "queued"  # recorded and queued: a worker (of any replica) builds it
    tenant = await wait_state(client, "later", until={"ready", "failed"}, seconds=60)
    assert tenant["state"] == "ready", tenant
    assert tenant["version"] == 10
    assert (await client.get("/tenants/later/schema")).json()["status"] == "up_to_date"
    # Once ready, the same async request is a replay.
    again = await client.post("/tenants", json={"id": "later"}, headers={"Prefer": "respond-async"})
    assert again.status_code == 200
    assert await databases(pg_url, settings.db_prefix) == {f"{settings.db_prefix}later"}


async def test_schema_of_a_tenant_still_provisioning_is_409(
    make_settings: MakeSettings, serve: Serve, pg_url: str
) -> None:
    settings = make_settings(FIXTURES / "ok")
    async with serve(settings) as client:
        await client.get("/healthz")
        cat = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
        try:
            await cat.execute(
                """INSERT INTO tenants (id, name, database, state, request_sha256)
                   VALUES ($1, $1, $2, 'provisioning', 'x')""",
                "busy",
                f"{settings.db_prefix}busy",
            )
        finally:
            await cat.close()
        body = assert_problem(await client.get("/tenants/busy/schema"), 409, "tenant_not_ready")
        assert body["state"] == "provisioning"
        assert_problem(await client.post("/tenants/busy/migrate"), 409, "tenant_not_ready")


# -- delete ----------------------------------------------------------------------------------------------------------


async def test_delete_needs_confirmation_then_drops_everything(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    assert (await ok_client.post("/tenants", json={"id": "gone"})).status_code == 201
    assert (await ok_client.post("/tenants", json={"id": "kept"})).status_code == 201
    database = f"{ok_settings.db_prefix}gone"

    body = assert_problem(await ok_client.delete("/tenants/gone"), 400, "confirmation_required")
    assert body["tenant"] == "gone"
    assert_problem(await ok_client.delete("/tenants/gone", params={"confirm": "kept"}), 400, "confirmation_required")
    assert_problem(await ok_client.delete("/tenants/gone", params={"confirm": "GONE"}), 400, "confirmation_required")
    assert database in await databases(pg_url, ok_settings.db_prefix)

    # An open session on the tenant's database does not block the drop.
    holder = await asyncpg.connect(with_database(pg_url, database))
    try:
        r = await ok_client.delete("/tenants/gone", params={"confirm": "gone", "purge": "true"})
        assert r.status_code == 204, r.text
        assert r.content == b""
    finally:
        await holder.close()
    assert await databases(pg_url, ok_settings.db_prefix) == {f"{ok_settings.db_prefix}kept"}
    assert_problem(await ok_client.get("/tenants/gone"), 404, "tenant_not_found")
    assert_problem(await ok_client.delete("/tenants/gone", params={"confirm": "gone"}), 404, "tenant_not_found")
    assert [t["id"] for t in (await ok_client.get("/tenants")).json()["items"]] == ["kept"]

    # The id can be used again.
    assert (await ok_client.post("/tenants", json={"id": "gone"})).status_code == 201


async def test_delete_a_failed_tenant(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    settings = make_settings(migration_dir("failing_stmt"))
    async with serve(settings) as client:
        assert_problem(await client.post("/tenants", json={"id": "bad"}), 500, "migration_failed")
        r = await client.delete("/tenants/bad", params={"confirm": "bad"})
        assert r.status_code == 204, r.text
        assert_problem(await client.get("/tenants/bad"), 404, "tenant_not_found")


# -- foreign databases, restarts, recovery ---------------------------------------------------------------------------


async def test_foreign_database_is_never_adopted_or_dropped(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    database = f"{ok_settings.db_prefix}theirs"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    await fetch(pg_url, database, "CREATE TABLE precious (v text)")
    await fetch(pg_url, database, "INSERT INTO precious VALUES ('keep me')")

    for _ in range(2):
        body = assert_problem(await ok_client.post("/tenants", json={"id": "theirs"}), 409, "database_exists")
        assert body["database"] == database
    assert database in await databases(pg_url, ok_settings.db_prefix)
    assert [r["v"] for r in await fetch(pg_url, database, "SELECT v FROM precious")] == ["keep me"]
    assert_problem(await ok_client.get("/tenants/theirs"), 404, "tenant_not_found")
    rows = await fetch(pg_url, ok_settings.catalog_database, "SELECT id FROM tenants")
    assert rows == []


async def test_restart_keeps_every_tenant(ok_settings: Settings, serve: Serve, pg_url: str) -> None:
    async with serve(ok_settings) as client:
        for i in ("one", "two", "three"):
            assert (await client.post("/tenants", json={"id": i, "name": i.title()})).status_code == 201
        before = (await client.get("/tenants")).json()["items"]
    async with serve(ok_settings) as client:
        after = (await client.get("/tenants")).json()["items"]
        assert after == before
        for i in ("one", "two", "three"):
            assert (await client.get(f"/tenants/{i}/schema")).json()["status"] == "up_to_date"
            assert (await client.post("/tenants", json={"id": i, "name": i.title()})).status_code == 200
    assert await databases(pg_url, ok_settings.db_prefix) == {
        ok_settings.db_prefix + i for i in ("one", "two", "three")
    }


async def _insert_tenant(pg_url: str, settings: Settings, tenant_id: str, state: str, owned: bool) -> str:
    database = f"{settings.db_prefix}{tenant_id}"
    cat = await asyncpg.connect(with_database(pg_url, settings.catalog_database))
    try:
        await cat.execute(
            """INSERT INTO tenants (id, name, database, state, request_sha256, database_owned)
               VALUES ($1, $1, $2, $3, 'x', $4)""",
            tenant_id,
            database,
            state,
            owned,
        )
    finally:
        await cat.close()
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    return database


async def test_recovery_undoes_what_a_crash_left_behind(ok_settings: Settings, serve: Serve, pg_url: str) -> None:
    async with serve(ok_settings) as client:
        assert (await client.post("/tenants", json={"id": "fine"})).status_code == 201
    # What a process killed in the middle of CREATE TENANT / DELETE leaves behind.
    half = await _insert_tenant(pg_url, ok_settings, "half", "provisioning", owned=True)
    dying = await _insert_tenant(pg_url, ok_settings, "dying", "deleting", owned=True)
    foreign = await _insert_tenant(pg_url, ok_settings, "foreign", "provisioning", owned=False)

    async with serve(ok_settings) as client:
        # Recovery runs in the background (readiness does not wait for it): the service answers meanwhile.
        assert (await client.get("/readyz")).status_code == 200
        await wait_state(client, "half", until={"failed"}, seconds=30)
        await wait_state(client, "foreign", until={"failed"}, seconds=30)
        for _ in range(600):
            if (await client.get("/tenants/dying")).status_code == 404:
                break
            await asyncio.sleep(0.05)
        remaining = await databases(pg_url, ok_settings.db_prefix)
        assert half not in remaining
        assert dying not in remaining
        assert foreign in remaining  # never recorded as ours: never dropped
        assert f"{ok_settings.db_prefix}fine" in remaining

        tenant = (await client.get("/tenants/half")).json()
        assert tenant["state"] == "failed"
        assert tenant["error"]["code"] == "interrupted"
        assert_problem(await client.get("/tenants/dying"), 404, "tenant_not_found")
        assert (await client.get("/tenants/foreign")).json()["state"] == "failed"
        assert (await client.get("/tenants/fine")).json()["state"] == "ready"

        # A retry of the interrupted tenant starts from scratch and succeeds.
        r = await client.post("/tenants", json={"id": "half"})
        assert r.status_code == 201, r.text
        assert r.json()["error"] is None
        # The foreign database still blocks its id, and is still not dropped.
        assert_problem(await client.post("/tenants", json={"id": "foreign"}), 409, "database_exists")
        assert foreign in await databases(pg_url, ok_settings.db_prefix)


async def test_broken_migration_folder_refuses_to_start(make_settings: MakeSettings, serve: Serve, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "broken")
    with pytest.raises(MigrationSetInvalid) as info:
        async with serve(settings):
            pytest.fail("the service started on a broken folder")
    problems = info.value.problems
    assert len(problems) == 6
    for needle in ("7_bad_name.sql", "0001_b_again.sql", "0005", "0002_blank.sql", "0003_comments.sql", "0004_index"):
        assert sum(needle in p for p in problems) == 1, (needle, problems)
        assert needle in str(info.value)
    # Refused before touching the server: not even the catalog database was made.
    rows = await fetch(pg_url, "postgres", "SELECT 1 FROM pg_database WHERE datname = $1", settings.catalog_database)
    assert rows == []
