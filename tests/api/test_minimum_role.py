"""The service runs as the documented minimum admin role (LOGIN CREATEDB CREATEROLE, not superuser).

PostgreSQL 15 and older refuse ``ALTER ROLE … NOSUPERUSER`` (and ``NOREPLICATION``, ``NOBYPASSRLS``) from a
non-superuser even when nothing changes, which made rotation a 500 there: rotation now sets the password alone and
checks the attributes apart. Run against PostgreSQL 15 with ``TENANTS_TEST_DATABASE_URL`` as well as the suite's
own server.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from pydantic import SecretStr

from service.config import Settings
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"


def as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def superuser(pg_url: str, sql: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_the_service_runs_and_rotates_as_the_minimum_admin_role(
    make_settings: MakeSettings, serve: Serve, pg_url: str, tag: str
) -> None:
    admin = f"adm_{tag}"
    await superuser(pg_url, f"CREATE ROLE {admin} LOGIN CREATEDB CREATEROLE PASSWORD 'pw_{tag}'")
    settings = make_settings(FIXTURES / "ok", database_url=SecretStr(as_role(pg_url, admin, f"pw_{tag}")))
    role = f"{settings.db_prefix}acme"
    async with serve(settings) as client:
        r = await client.post("/tenants", json={"id": "acme"})
        assert r.status_code == 201, r.text
        r = await client.post("/tenants/acme/credentials/rotate")
        assert r.status_code == 200, r.text
        conn = await asyncpg.connect(r.json()["connection_url"])
        assert await conn.fetchval("SELECT current_user") == role
        await conn.close()
        assert (await client.get("/tenants/acme/schema")).json()["status"] == "up_to_date"
        assert (await client.get("/tenants/acme/drift")).status_code == 200

        # Someone gave the role more than a tenant may have: rotation takes back what the admin role may take back,
        await superuser(pg_url, f'ALTER ROLE "{role}" CREATEDB')
        assert (await client.post("/tenants/acme/credentials/rotate")).status_code == 200
        conn = await asyncpg.connect(with_database(pg_url, "postgres"))
        assert await conn.fetchval("SELECT rolcreatedb FROM pg_roles WHERE rolname = $1", role) is False
        await conn.close()
        # and names what only a superuser can.
        await superuser(pg_url, f'ALTER ROLE "{role}" SUPERUSER')
        r = await client.post("/tenants/acme/credentials/rotate")
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "role_privileged"
        assert r.json()["attributes"] == ["NOSUPERUSER"]
        await superuser(pg_url, f'ALTER ROLE "{role}" NOSUPERUSER')

        r = await client.delete("/tenants/acme", params={"confirm": "acme", "purge": "true"})
        assert r.status_code == 204, r.text
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", admin) is False
        assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role) == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", role) == 0
    finally:
        await conn.close()
