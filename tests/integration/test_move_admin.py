"""A move off a server whose admin role is not a superuser (``LOGIN CREATEDB CREATEROLE``), on a real server.

Server ``n`` is the session cluster reached as such a role (the catalog stays on the superuser's URL), ``b`` a second
cluster. PostgreSQL refuses that role two things a move needs: ending the tenant role's sessions (without
``pg_signal_backend``) and reading its SCRAM verifier (``pg_authid``: superusers only). Each refusal is a ``409
move_refused`` naming what to run, before anything is recorded; ``rotate_password`` moves it with a new password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.config import Settings
from tests.conftest import FIXTURES
from tests.integration.lifecycle_support import checksums, fetch, password_of, url_on
from tests.servers_support import names_on, second_cluster

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="module")
def url_b() -> Iterator[str]:
    with second_cluster() as (_, url):
        yield url


def _as(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{role}:{password}@{parts.hostname}:{parts.port or 5432}", *parts[2:]))


async def _admin(pg_url: str, statement: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _checks_passwords(wrong: str) -> bool:
    try:
        await fetch(wrong, "SELECT 1")
    except asyncpg.InvalidPasswordError:
        return True
    return False


async def _until_moved(client: Any, tenant_id: str) -> dict[str, Any]:
    for _ in range(600):
        tenant = (await client.get(f"/tenants/{tenant_id}")).json()
        if tenant["state"] != "moving" and tenant["progress"] is None:
            return dict(tenant)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{tenant_id} still moving")


async def test_a_non_superuser_admin_is_refused_with_the_fix_then_moves_with_a_new_password(
    make_settings: MakeSettings, serve: Callable[..., Any], pg_url: str, url_b: str, tag: str
) -> None:
    admin = f"admin{tag}"  # not under the tenants' prefix
    await _admin(pg_url, f"CREATE ROLE \"{admin}\" LOGIN CREATEDB CREATEROLE PASSWORD 'adminpw'")
    servers = [{"name": "n", "url": _as(pg_url, admin, "adminpw")}, {"name": "b", "url": url_b}]
    settings = make_settings(FIXTURES / "ok", servers=servers)
    database = f"{settings.db_prefix}na"
    async with serve(settings) as client:
        made = (await client.post("/tenants", json={"id": "na", "server": "n"})).json()
        old_url = made["connection_url"]
        await fetch(old_url, "INSERT INTO accounts (email) SELECT n || '@x' FROM generate_series(1, 50) n")
        before = await checksums(pg_url, database)

        # 1. it may not end the role's sessions: refused, with the GRANT to run; nothing recorded or made
        refused = await client.post("/tenants/na/move", json={"server": "b"})
        assert (refused.status_code, refused.json()["code"]) == (409, "move_refused")
        assert refused.json()["reason"] == "cannot_end_sessions"
        assert f'GRANT pg_signal_backend TO "{admin}"' in refused.json()["detail"]
        await _admin(pg_url, f'GRANT pg_signal_backend TO "{admin}"')

        # 2. it may not read pg_authid: refused, naming the superuser URL or rotate_password
        refused = await client.post("/tenants/na/move", json={"server": "b"})
        assert (refused.status_code, refused.json()["code"]) == (409, "move_refused"), refused.text
        problem = refused.json()
        assert (problem["reason"], problem["server"], problem["admin_role"]) == ("verifier_unreadable", "n", admin)
        assert "superuser" in problem["detail"]
        assert '"rotate_password": true' in problem["detail"]
        tenant = (await client.get("/tenants/na")).json()
        assert (tenant["state"], tenant["server"], tenant["progress"]) == ("ready", "n", None)
        assert await names_on(url_b, settings.db_prefix) == (set(), set())
        assert await fetch(old_url, "SELECT 1")  # untouched: the old password still works

        # 3. rotate_password: a new password at once, the move runs, the new URL works on the target
        started = await client.post("/tenants/na/move", json={"server": "b", "rotate_password": True})
        assert started.status_code == 202, started.text
        new_url = started.json()["connection_url"]
        assert urlsplit(new_url).port == urlsplit(url_b).port
        if await _checks_passwords(_as(pg_url, admin, "wrong")):  # not a trust server (127.0.0.1:5432 is)
            with pytest.raises(asyncpg.InvalidPasswordError):
                await fetch(old_url, "SELECT 1")
        tenant = await _until_moved(client, "na")
        assert (tenant["state"], tenant["server"]) == ("ready", "b")
        assert await checksums(url_b, database) == before
        assert (await fetch(new_url, "SELECT count(*) AS n FROM accounts"))[0]["n"] == before["public.accounts"][0]
        with pytest.raises(asyncpg.InvalidPasswordError):
            await fetch(url_on(url_b, database, password_of(old_url), database), "SELECT 1")
        # the non-superuser admin dropped the source's database and role after the switch
        assert await names_on(pg_url, settings.db_prefix) == (set(), set())
