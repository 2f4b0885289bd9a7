"""Per-tenant credentials and isolation, against a real PostgreSQL.

Each tenant gets a login role named like its database; the 201 answer carries its password once, in
``connection_url``. The tests log in with that URL. The suite's own server (embedded) asks for the password; a server
given by ``TENANTS_TEST_DATABASE_URL`` may trust 127.0.0.1, so these tests do not rely on it: isolation comes from
CONNECT privileges (revoked from PUBLIC on every tenant database) and from grants inside the database, and that the
password is the right one is shown another way: the SCRAM verifier the server stores must match it. Wrong and old
passwords refused: tests/integration/test_embedded.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.store.db import with_database
from service.tenants.credentials import scram_sha256

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
MigrationDir = Callable[[str], Path]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
PROBLEM = "application/problem+json"


async def fetch(pg_url: str, database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def role(pg_url: str, name: str) -> asyncpg.Record | None:
    rows = await fetch(pg_url, "postgres", "SELECT * FROM pg_authid WHERE rolname = $1", name)
    return rows[0] if rows else None


def password_of(url: str) -> str:
    password = urlsplit(url).password
    assert password
    return password


def verifier_matches(stored: str, password: str) -> bool:
    iterations, salt = stored.split("$")[1].split(":")
    return scram_sha256(password, salt=base64.b64decode(salt), iterations=int(iterations)) == stored


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    return body


@pytest.fixture
def ok_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(FIXTURES / "ok")


@pytest.fixture
async def ok_client(ok_settings: Settings, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(ok_settings) as client:
        yield client


async def create(client: httpx.AsyncClient, tenant_id: str, **body: Any) -> str:
    r = await client.post("/tenants", json={"id": tenant_id, **body})
    assert r.status_code == 201, r.text
    url: str = r.json()["connection_url"]
    return url


# -- the role and its password ---------------------------------------------------------------------------------------


async def test_create_answers_the_connection_url_once(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    r = await ok_client.post("/tenants", json={"id": "acme"})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    url = r.json()["connection_url"]
    database = f"{ok_settings.db_prefix}acme"
    parts = urlsplit(url)
    admin = urlsplit(pg_url)
    assert (parts.scheme, parts.username, parts.path) == ("postgresql", database, f"/{database}")
    assert (parts.hostname, parts.port) == (admin.hostname, admin.port)
    assert len(password_of(url)) == 43

    replay = await ok_client.post("/tenants", json={"id": "acme"})
    assert replay.status_code == 200, replay.text
    assert "connection_url" not in replay.json()
    assert "connection_url" not in (await ok_client.get("/tenants/acme")).json()
    listed = (await ok_client.get("/tenants")).json()["items"]
    assert ["connection_url" in t for t in listed] == [False]


async def test_role_is_a_plain_login_and_its_verifier_matches_the_password(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    url = await create(ok_client, "acme")
    found = await role(pg_url, f"{ok_settings.db_prefix}acme")
    assert found is not None
    assert found["rolcanlogin"]
    assert not any(found[a] for a in ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls"))
    assert found["rolpassword"].startswith("SCRAM-SHA-256$")
    assert verifier_matches(found["rolpassword"], password_of(url))


async def test_password_is_stored_nowhere_in_clear(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = password_of(await create(ok_client, "acme", seed={"email": "a@acme.test"}))
    r = await ok_client.post("/tenants/acme/credentials/rotate")
    assert r.status_code == 200, r.text
    second = password_of(r.json()["connection_url"])
    catalog = ok_settings.catalog_database
    dump = await fetch(
        pg_url, catalog, "SELECT t::text AS row FROM tenants t UNION ALL SELECT o::text FROM operations o"
    )
    text = "\n".join(r["row"] for r in dump) + caplog.text
    for password in (first, second):
        assert password not in text
    kinds = await fetch(pg_url, catalog, "SELECT kind FROM operations ORDER BY id")
    assert [k["kind"] for k in kinds] == ["create", "rotate_credentials"]


async def test_async_create_answers_the_url_in_the_202(ok_client: httpx.AsyncClient) -> None:
    r = await ok_client.post("/tenants", json={"id": "later"}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    url = r.json()["connection_url"]
    for _ in range(600):
        if (await ok_client.get("/tenants/later")).json()["state"] == "ready":
            break
        await asyncio.sleep(0.05)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 1
    finally:
        await conn.close()


# -- isolation -------------------------------------------------------------------------------------------------------


async def test_a_tenant_role_uses_its_own_tables_and_nothing_else(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    url_a = await create(ok_client, "a")
    await create(ok_client, "b")
    database_b = f"{ok_settings.db_prefix}b"

    conn = await asyncpg.connect(url_a)
    try:
        # Its own data: read, write (the serial's sequence included), change, remove.
        await conn.execute("INSERT INTO accounts (email, name) VALUES ('x@a.test', 'x')")
        await conn.execute("UPDATE accounts SET name = 'y' WHERE email = 'x@a.test'")
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 2
        await conn.execute("DELETE FROM accounts WHERE email = 'x@a.test'")
        # Not the service's history, not new objects, not databases or roles.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM _tenants.history")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE mine (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE DATABASE stolen")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE ROLE stolen")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE accounts")
    finally:
        await conn.close()

    # Another tenant's database, and the catalog, refuse the connection itself.
    for database in (database_b, ok_settings.catalog_database):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await (await asyncpg.connect(with_database(url_a, database))).close()
    acl = await fetch(
        pg_url, "postgres", "SELECT datacl::text[] AS acl FROM pg_database WHERE datname = $1", database_b
    )
    assert not any(entry.startswith("=") and "c" in entry.split("/")[0] for entry in acl[0]["acl"])


async def test_tables_of_later_migrations_are_granted_too(
    make_settings: MakeSettings, serve: Serve, migration_dir: MigrationDir
) -> None:
    folder = migration_dir("ok")
    settings = make_settings(folder)
    async with serve(settings) as client:
        url = await create(client, "grow")
    (folder / "0002_notes.sql").write_text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n")
    async with serve(settings) as client:
        r = await client.post("/tenants/grow/migrate")
        assert r.status_code == 200, r.text
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO notes (body) VALUES ('made by the tenant')")
        assert await conn.fetchval("SELECT body FROM notes") == "made by the tenant"
    finally:
        await conn.close()


# -- rotate ----------------------------------------------------------------------------------------------------------


async def test_rotate_gives_a_new_password(ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str) -> None:
    old = password_of(await create(ok_client, "acme"))
    r = await ok_client.post("/tenants/acme/credentials/rotate")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert set(r.json()) == {"connection_url"}
    new = password_of(r.json()["connection_url"])
    assert new != old
    stored = (await role(pg_url, f"{ok_settings.db_prefix}acme"))["rolpassword"]  # type: ignore[index]
    assert verifier_matches(stored, new)
    assert not verifier_matches(stored, old)
    conn = await asyncpg.connect(r.json()["connection_url"])
    await conn.close()


async def test_rotate_of_an_unknown_or_unready_tenant(ok_client: httpx.AsyncClient) -> None:
    assert_problem(await ok_client.post("/tenants/nobody/credentials/rotate"), 404, "tenant_not_found")
    assert_problem(await ok_client.post("/tenants/Bad-Id/credentials/rotate"), 422, "invalid_tenant_id")


async def test_rotate_gives_a_role_to_a_tenant_made_before_roles(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    await create(ok_client, "old")
    database = f"{ok_settings.db_prefix}old"
    # What a tenant created by an earlier version looks like: no role, a database open to PUBLIC.
    await fetch(pg_url, database, f'DROP OWNED BY "{database}"')
    await fetch(pg_url, "postgres", f'DROP ROLE "{database}"')
    await fetch(pg_url, "postgres", f'GRANT CONNECT ON DATABASE "{database}" TO PUBLIC')
    await fetch(pg_url, ok_settings.catalog_database, "UPDATE tenants SET role_owned = false WHERE id = 'old'")

    r = await ok_client.post("/tenants/old/credentials/rotate")
    assert r.status_code == 200, r.text
    conn = await asyncpg.connect(r.json()["connection_url"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 1
    finally:
        await conn.close()
    rows = await fetch(pg_url, ok_settings.catalog_database, "SELECT role_owned FROM tenants WHERE id = 'old'")
    assert rows[0]["role_owned"]


# -- a role that is not ours, and cleanup --------------------------------------------------------------------------


async def test_a_foreign_role_with_the_name_is_409_and_nothing_is_left(
    ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str
) -> None:
    database = f"{ok_settings.db_prefix}taken"
    await fetch(pg_url, "postgres", f'CREATE ROLE "{database}" LOGIN')
    body = assert_problem(await ok_client.post("/tenants", json={"id": "taken"}), 409, "role_exists")
    assert body["role"] == database
    assert (await ok_client.get("/tenants/taken")).status_code == 404
    assert not await fetch(pg_url, "postgres", "SELECT 1 FROM pg_database WHERE datname = $1", database)
    assert await role(pg_url, database) is not None  # never dropped: it is not ours
    # Once the foreign role is gone, the same id can be created.
    await fetch(pg_url, "postgres", f'DROP ROLE "{database}"')
    await create(ok_client, "taken")


async def test_delete_drops_the_role(ok_client: httpx.AsyncClient, ok_settings: Settings, pg_url: str) -> None:
    await create(ok_client, "gone")
    r = await ok_client.delete("/tenants/gone", params={"confirm": "gone", "purge": "true"})
    assert r.status_code == 204, r.text
    assert await role(pg_url, f"{ok_settings.db_prefix}gone") is None


async def test_a_failed_creation_drops_the_role(make_settings: MakeSettings, serve: Serve, pg_url: str) -> None:
    settings = make_settings(FIXTURES / "failing_stmt")
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "broken"})
        assert_problem(r, 500, "migration_failed")
        assert "connection_url" not in r.text
    assert await role(pg_url, f"{settings.db_prefix}broken") is None
    rows = await fetch(pg_url, settings.catalog_database, "SELECT database_owned, role_owned FROM tenants")
    assert [tuple(r) for r in rows] == [(False, False)]


async def test_recovery_drops_only_roles_the_catalog_owns(ok_settings: Settings, serve: Serve, pg_url: str) -> None:
    async with serve(ok_settings):
        pass  # creates and upgrades the catalog
    prefix = ok_settings.db_prefix
    for tenant_id, owned in (("half", True), ("foreign", False)):
        await fetch(pg_url, "postgres", f'CREATE ROLE "{prefix}{tenant_id}" LOGIN')
        await fetch(
            pg_url,
            ok_settings.catalog_database,
            """INSERT INTO tenants (id, name, database, state, request_sha256, role_owned)
               VALUES ($1, $1, $2, 'provisioning', 'x', $3)""",
            tenant_id,
            prefix + tenant_id,
            owned,
        )
    async with serve(ok_settings) as client:
        for tenant_id in ("half", "foreign"):
            for _ in range(600):  # recovery runs in the background
                if (await client.get(f"/tenants/{tenant_id}")).json()["state"] == "failed":
                    break
                await asyncio.sleep(0.05)
            assert (await client.get(f"/tenants/{tenant_id}")).json()["state"] == "failed"
    assert await role(pg_url, f"{prefix}half") is None
    assert await role(pg_url, f"{prefix}foreign") is not None
