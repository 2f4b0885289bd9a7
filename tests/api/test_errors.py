"""Errors over HTTP: every one is application/problem+json with a stable code; bad input never reaches SQL; a
failed creation leaves nothing behind and names the failing file, statement, line and SQLSTATE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
PROBLEM = "application/problem+json"
STANDARD = {"type", "title", "status", "detail", "code"}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body.keys() >= STANDARD
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:tenant-provisioner:error:{code}"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def databases(pg_url: str, prefix: str) -> set[str]:
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix)
    finally:
        await conn.close()
    return {r["datname"] for r in rows}


@pytest.fixture
def ok_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(FIXTURES / "ok")


@pytest.fixture
async def ok_client(ok_settings: Settings, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(ok_settings) as client:
        yield client


# -- invalid input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant_id", ["Acme", "-x", "", "x" * 41, 16, "a b", "ü", "a;drop", None, "_x", ["a"], 1.0])
async def test_invalid_ids_are_422_and_create_nothing(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str, tenant_id: object
) -> None:
    r = await ok_client.post("/tenants", json={"id": tenant_id, "name": "x"})
    body = assert_problem(r, 422, "invalid_tenant_id")
    assert "1 to 40 characters" in body["detail"]
    assert await databases(pg_url, ok_settings.db_prefix) == set()
    assert (await ok_client.get("/tenants")).json()["items"] == []


async def test_missing_id_is_invalid_tenant_id(ok_client: httpx.AsyncClient) -> None:
    assert_problem(await ok_client.post("/tenants", json={"name": "x"}), 422, "invalid_tenant_id")


async def test_hostile_id_is_not_echoed(ok_client: httpx.AsyncClient) -> None:
    hostile = "<script>'; DROP DATABASE postgres; --"
    r = await ok_client.post("/tenants", json={"id": hostile})
    assert_problem(r, 422, "invalid_tenant_id")
    assert "DROP DATABASE" not in r.text
    assert "<script>" not in r.text


@pytest.mark.parametrize("path", ["/tenants/Acme", "/tenants/-x/schema", f"/tenants/{'x' * 41}", "/tenants/a%20b"])
async def test_invalid_id_in_path_is_422(ok_client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await ok_client.get(path), 422, "invalid_tenant_id")


async def test_invalid_id_in_path_of_migrate_and_delete(ok_client: httpx.AsyncClient) -> None:
    assert_problem(await ok_client.post("/tenants/Acme/migrate"), 422, "invalid_tenant_id")
    assert_problem(await ok_client.delete("/tenants/Acme", params={"confirm": "Acme"}), 422, "invalid_tenant_id")


@pytest.mark.parametrize(
    "body",
    [
        {"id": "acme", "nmae": "typo"},
        {"id": "acme", "database": "postgres"},
        {"id": "acme", "seed": "not-an-object"},
        {"id": "acme", "seed": {"email": 5}},
        {"id": "acme", "name": 5},
        {"id": "acme", "name": ""},
        {"id": "acme", "seed": {f"k{i}": "v" for i in range(51)}},
        {"id": "acme", "seed": {"email": "x" * 1001}},
    ],
)
async def test_malformed_bodies_are_invalid_request(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str, body: dict[str, Any]
) -> None:
    r = await ok_client.post("/tenants", json=body)
    problem = assert_problem(r, 422, "invalid_request")
    assert isinstance(problem["errors"], list)
    assert problem["errors"]
    assert await databases(pg_url, ok_settings.db_prefix) == set()


@pytest.mark.parametrize("content", [b"[]", b'"acme"', b""])
async def test_bodies_of_the_wrong_shape_are_422(ok_client: httpx.AsyncClient, content: bytes) -> None:
    r = await ok_client.post("/tenants", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["code"] in {"invalid_request", "invalid_tenant_id"}


async def test_unknown_migrate_fields_are_invalid_request(ok_client: httpx.AsyncClient) -> None:
    assert (await ok_client.post("/tenants", json={"id": "acme"})).status_code == 201
    r = await ok_client.post("/tenants/acme/migrate", json={"allow_out_of_order": True, "force": True})
    assert_problem(r, 422, "invalid_request")


async def test_unknown_route_and_method(ok_client: httpx.AsyncClient) -> None:
    body = assert_problem(await ok_client.get("/nowhere"), 404, "not_found")
    assert body["title"] == "Not Found"
    assert_problem(await ok_client.get("/tenants/acme/nothing"), 404, "not_found")
    r = await ok_client.put("/tenants/acme", json={})
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET"
    # Every 405 lists the path's methods, whichever router holds it.
    for method, path, allowed in [
        ("PUT", "/tenants", "GET, POST"),
        ("GET", "/tenants/acme/migrate", "POST"),
        ("DELETE", "/healthz", "GET"),
        ("PATCH", "/rollouts/1/cancel", "POST"),
    ]:
        r = await ok_client.request(method, path)
        assert_problem(r, 405, "method_not_allowed")
        assert r.headers["allow"] == allowed, (method, path)


# -- a failed creation -------------------------------------------------------------------------------------------

FAILED_FIELDS = {
    "code": "migration_failed",
    "version": 2,
    "file": "0002_notes.sql",
    "statement": 3,
    "line": 5,
    "sqlstate": "42P01",
}


async def test_failed_migration_leaves_nothing_and_a_fixed_file_retries(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d = migration_dir("failing_stmt")
    settings = make_settings(d)
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "acme", "name": "Acme"})
        body = assert_problem(r, 500, "migration_failed")
        for key, value in FAILED_FIELDS.items():
            assert body[key] == value, (key, body)
        assert "missing_table" in body["detail"]
        assert "0002_notes.sql" in body["detail"]
        assert "Traceback" not in r.text

        tenant = (await client.get("/tenants/acme")).json()
        assert tenant["state"] == "failed"
        assert tenant["version"] is None
        error = tenant["error"]
        for key, value in FAILED_FIELDS.items():
            assert error[key] == value, (key, error)
        assert "missing_table" in error["message"]

        schema = (await client.get("/tenants/acme/schema")).json()
        assert schema["status"] == "failed"
        assert schema["applied"] == []
        assert schema["error"]["statement"] == 3

        # All or nothing: the new database is gone, not half-migrated.
        assert await databases(pg_url, settings.db_prefix) == set()

        # The same request again retries from scratch, and fails the same way.
        again = await client.post("/tenants", json={"id": "acme", "name": "Acme"})
        assert assert_problem(again, 500, "migration_failed")["statement"] == 3
        assert await databases(pg_url, settings.db_prefix) == set()

    (d / "0002_notes.sql").write_text(
        'CREATE TABLE "notes" ("id" serial PRIMARY KEY, "body" text);\n'
        "--> statement-breakpoint\n"
        'ALTER TABLE "notes" ADD COLUMN "account_id" integer;\n'
        "--> statement-breakpoint\n"
        'ALTER TABLE "notes"\n'
        '  ADD CONSTRAINT "notes_account_fk"\n'
        '  FOREIGN KEY ("account_id") REFERENCES "accounts"("id");\n'
    )
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "acme", "name": "Acme"})
        assert r.status_code == 201, r.text
        tenant = r.json()
        assert tenant["state"] == "ready"
        assert tenant["error"] is None
        assert tenant["version"] == 2
        schema = (await client.get("/tenants/acme/schema")).json()
        assert schema["status"] == "up_to_date"
        assert [a["version"] for a in schema["applied"]] == [0, 1, 2]
    assert await databases(pg_url, settings.db_prefix) == {f"{settings.db_prefix}acme"}
    conn = await asyncpg.connect(with_database(pg_url, f"{settings.db_prefix}acme"))
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conname = 'notes_account_fk'") == 1
    finally:
        await conn.close()


async def test_failure_position_points_at_the_offending_line(
    make_settings: MakeSettings, serve: Serve, tmp_path: Path, pg_url: str
) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "0000_a.sql").write_text('CREATE TABLE "a" ("id" integer);\n')
    (d / "0001_b.sql").write_text(
        'CREATE TABLE "b" ("id" integer);\n'  # 1
        "--> statement-breakpoint\n"  # 2
        'CREATE TABLE "c" ( -- café ☕, 例え: positions count characters, not bytes\n'  # 3
        '  "id" integer,\n'  # 4
        '  "kind" no_such_type\n'  # 5
        ");\n"  # 6
        "--> statement-breakpoint\n"  # 7
        'CREATE TABLE "d" ("id" integer);\n'  # 8
    )
    settings = make_settings(d)
    async with serve(settings) as client:
        body = assert_problem(await client.post("/tenants", json={"id": "pos"}), 500, "migration_failed")
        assert (body["version"], body["file"], body["statement"], body["line"], body["sqlstate"]) == (
            1,
            "0001_b.sql",
            2,
            5,
            "42704",
        )
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_failed_async_creation_is_recorded(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    settings = make_settings(migration_dir("failing_stmt"))
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "later"}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        async with asyncio.timeout(30):
            while True:
                tenant = (await client.get("/tenants/later")).json()
                if tenant["state"] not in ("queued", "provisioning"):
                    break
                await asyncio.sleep(0.05)
        assert tenant["state"] == "failed"
        for key, value in FAILED_FIELDS.items():
            assert tenant["error"][key] == value, (key, tenant)
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_failing_seed_is_reported_and_rolled_back(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir, pg_url: str
) -> None:
    d = migration_dir("ok")
    (d / "seeds" / "0002_broken.sql").write_text(
        "SELECT 1;\n--> statement-breakpoint\nINSERT INTO nowhere VALUES (1);\n"
    )
    settings = make_settings(d)
    async with serve(settings) as client:
        body = assert_problem(await client.post("/tenants", json={"id": "s"}), 500, "migration_failed")
        assert body["file"] == "0002_broken.sql"
        assert body["statement"] == 2
        assert body["line"] == 3
        assert body["sqlstate"] == "42P01"
        assert "version" not in body or body["version"] is None
        assert (await client.get("/tenants/s")).json()["state"] == "failed"
    assert await databases(pg_url, settings.db_prefix) == set()


async def test_problem_detail_is_never_replaced_by_error_details(
    make_settings: MakeSettings, serve: Serve, tmp_path: Path
) -> None:
    # A unique violation carries a server DETAIL ("Key (v)=(1) already exists."): it must not clobber the
    # problem's own detail member, nor break the error handler.
    d = tmp_path / "m"
    d.mkdir()
    (d / "0000_a.sql").write_text('CREATE TABLE "a" ("v" integer UNIQUE);\n--> statement-breakpoint\n')
    (d / "0001_b.sql").write_text(
        'INSERT INTO "a" VALUES (1);\n--> statement-breakpoint\nINSERT INTO "a" VALUES (1);\n'
    )
    async with serve(make_settings(d)) as client:
        r = await client.post("/tenants", json={"id": "dup"})
        body = assert_problem(r, 500, "migration_failed")
        assert body["detail"].startswith("0001_b.sql: ")
        assert body["sqlstate"] == "23505"
        assert body["statement"] == 2
        assert json.dumps(body).count("already exists") >= 1  # the server's DETAIL is kept, under its own name


# -- every error answer is problem+json -----------------------------------------------------------------------------


async def test_all_error_answers_are_problem_json(ok_client: httpx.AsyncClient) -> None:
    assert (await ok_client.post("/tenants", json={"id": "acme"})).status_code == 201
    answers = [
        (await ok_client.post("/tenants", json={"id": "acme", "name": "other"}), 409, "tenant_exists"),
        (await ok_client.get("/tenants/ghost"), 404, "tenant_not_found"),
        (await ok_client.post("/tenants/ghost/migrate"), 404, "tenant_not_found"),
        (await ok_client.delete("/tenants/ghost", params={"confirm": "ghost"}), 404, "tenant_not_found"),
        (await ok_client.delete("/tenants/acme"), 400, "confirmation_required"),
        (await ok_client.get("/tenants", params={"cursor": "%%%"}), 422, "invalid_request"),
        (await ok_client.post("/tenants", json={"id": 16}), 422, "invalid_tenant_id"),
        (await ok_client.get("/missing"), 404, "not_found"),
    ]
    for response, status, code in answers:
        assert_problem(response, status, code)
