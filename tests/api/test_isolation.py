"""A tenant role logs in to its own database and nowhere else the service can reach: the isolation matrix.

Run on the suite's server (embedded PostgreSQL 18) and on PostgreSQL 15 (``TENANTS_TEST_DATABASE_URL``). The test
lets the service revoke ``CONNECT`` on ``postgres`` and ``template1`` (``TENANTS_REVOKE_CONNECT``), which on a
shared server changes them for everyone, so it puts their ACLs back as they were afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from service.config import Settings
from service.errors import ServerInsecure
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
SHARED = ("postgres", "template1")


@pytest.fixture
async def shared_acls(pg_url: str) -> AsyncIterator[None]:
    """Put the ACLs of ``postgres`` and ``template1`` back as they were (the service revokes CONNECT on them)."""
    conn = await asyncpg.connect(pg_url)
    before = {
        r["datname"]: r["datacl"]
        for r in await conn.fetch("SELECT datname, datacl::text[] FROM pg_database WHERE datname = ANY($1)", SHARED)
    }
    try:
        yield
    finally:
        try:
            for name, acl in before.items():
                # Only what the service changed: CONNECT for PUBLIC (a NULL ACL is the default, which grants it).
                if acl is None or any(a.startswith("=") and "c" in a.split("/")[0] for a in acl):
                    await conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO PUBLIC')
        finally:
            await conn.close()


def login(url: str, role: str, database: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    user = role if password is None else f"{role}:{password}"
    return urlunsplit((parts.scheme, f"{user}@{parts.hostname}:{parts.port}", "/" + database, "", ""))


async def can_log_in(tenant_url: str, database: str) -> bool:
    """Whether the tenant's role, with its password, may connect to ``database``."""
    try:
        conn = await asyncpg.connect(with_database(tenant_url, database))
    except asyncpg.InsufficientPrivilegeError:
        return False
    await conn.close()
    return True


async def test_a_tenant_role_logs_in_to_its_own_database_only(
    make_settings: MakeSettings,
    serve: Serve,
    pg_url: str,
    tag: str,
    shared_acls: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    foreign = f"x{tag}_foreign"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{foreign}"')
    finally:
        await admin.close()
    settings = make_settings(FIXTURES / "ok", revoke_connect=SHARED)
    caplog.set_level(logging.WARNING, "service.store.isolation")
    async with serve(settings) as client:
        urls = {}
        for tenant in ("acme", "other"):
            created = await client.post("/tenants", json={"id": tenant})
            assert created.status_code == 201
            urls[tenant] = created.json()["connection_url"]
        # The role logs in with its own password: what stops it elsewhere is CONNECT privileges.
        matrix = {
            "own database": f"{settings.db_prefix}acme",
            "other tenant": f"{settings.db_prefix}other",
            "catalog": settings.catalog_database,
            "postgres": "postgres",
            "template1": "template1",
            "foreign database": foreign,
        }
        seen = {what: await can_log_in(urls["acme"], db) for what, db in matrix.items()}
        # A database the service does not own keeps PostgreSQL's default until its owner closes it; the start-up
        # log names it with the one-line step.
        assert seen == {what: what in ("own database", "foreign database") for what in matrix}
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert foreign in warned
        assert "REVOKE CONNECT ON DATABASE <name> FROM PUBLIC" in warned
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'REVOKE CONNECT ON DATABASE "{foreign}" FROM PUBLIC')
        finally:
            await admin.close()
        assert not await can_log_in(urls["acme"], foreign)
        assert await can_log_in(urls["acme"], matrix["own database"])
        # The service's own admin sessions are unaffected.
        assert (await client.get("/tenants/acme/schema")).json()["status"] == "up_to_date"


async def test_the_service_refuses_to_start_where_public_may_create_in_its_admin_database(
    make_settings: MakeSettings, serve: Serve, pg_url: str, tag: str
) -> None:
    """PostgreSQL 14's default, recreated on any version: PUBLIC may create in schema public of the maintenance
    database. A superuser admin role revokes it; the minimum admin role, which may not, refuses to start."""
    maintenance, admin_role = f"m{tag}_maint", f"adm_{tag}"
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'CREATE DATABASE "{maintenance}"')
        await conn.execute(f"CREATE ROLE {admin_role} LOGIN CREATEDB CREATEROLE PASSWORD '{admin_role}-secret'")
    finally:
        await conn.close()

    async def open_create() -> None:
        c = await asyncpg.connect(with_database(pg_url, maintenance))
        try:
            await c.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        finally:
            await c.close()

    async def public_may_create() -> bool:
        c = await asyncpg.connect(with_database(pg_url, maintenance))
        try:
            return bool(await c.fetchval("SELECT has_schema_privilege('public', 'public', 'CREATE')"))
        finally:
            await c.close()

    await open_create()
    minimum_url = login(pg_url, admin_role, maintenance, f"{admin_role}-secret")
    minimum = make_settings(FIXTURES / "ok", database_url=SecretStr(minimum_url))
    with pytest.raises(ServerInsecure, match=rf"schema public of database {maintenance}.*REVOKE CREATE ON SCHEMA"):
        async with serve(minimum):
            pass
    assert await public_may_create()
    superuser = make_settings(FIXTURES / "ok", database_url=SecretStr(with_database(pg_url, maintenance)))
    async with serve(superuser) as client:
        assert (await client.get("/readyz")).status_code == 200
    assert not await public_may_create()
