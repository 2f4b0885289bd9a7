"""DELETE of an adopted tenant gives the database back as it was before adoption (its own schema and data stay)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from service.config import Settings
from service.store.db import with_database

MakeSettings = Callable[..., Settings]
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
OK = Path(__file__).resolve().parents[1] / "fixtures" / "migrations" / "ok"

# Everything adoption, rotation and migrations by the service could leave: schemas, relations, the database's
# and schema public's privileges (as sets, the default made explicit), default privileges, and roles.
FINGERPRINT = """
SELECT (SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema') AS schemas,
       (SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema') AS relations,
       (SELECT array_agg(format('%s:%s', a.grantee, a.privilege_type) ORDER BY a.grantee, a.privilege_type)
        FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
        WHERE d.datname = current_database()) AS database_acl,
       (SELECT array_agg(format('%s:%s', a.grantee, a.privilege_type) ORDER BY a.grantee, a.privilege_type)
        FROM pg_namespace s, aclexplode(coalesce(s.nspacl, acldefault('n', s.nspowner))) a
        WHERE s.nspname = 'public') AS public_acl,
       (SELECT count(*) FROM pg_default_acl) AS default_acls,
       (SELECT array_agg(e ORDER BY e) FROM (
          SELECT format('%s:%s:%s', c.relname, a.grantee, a.privilege_type) AS e
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
               aclexplode(coalesce(c.relacl, acldefault(
                   (CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S')) x) AS relation_acls,
       (SELECT count(*) FROM accounts) AS rows
"""


async def fingerprint(pg_url: str, database: str, tag: str) -> dict[str, Any]:
    conn = await asyncpg.connect(with_database(pg_url, database))
    try:
        row = await conn.fetchrow(FINGERPRINT)
        roles = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE strpos(rolname, $1) > 0", tag)
    finally:
        await conn.close()
    assert row is not None
    return {**dict(row), "roles": roles}


async def test_delete_of_an_adopted_tenant_gives_the_database_back(
    make_settings: MakeSettings, serve: Serve, pg_url: str, tag: str
) -> None:
    settings = make_settings(OK)
    name = f"x{tag}_legacy"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:  # the schema of version 0, made by hand, with data
        await conn.execute((OK / "0000_accounts.sql").read_text().replace("--> statement-breakpoint", ""))
        await conn.execute("INSERT INTO accounts (email) VALUES ('a@x'), ('b@x')")
    finally:
        await conn.close()
    before = await fingerprint(pg_url, name, tag)

    async with serve(settings) as client:
        r = await client.post("/tenants/legacy/adopt", json={"database": name})
        assert r.status_code == 201, r.text
        # Its role, grants and default privileges, CONNECT revoked from PUBLIC.
        assert (await client.post("/tenants/legacy/credentials/rotate")).status_code == 200
        during = await fingerprint(pg_url, name, tag)
        assert during["roles"] == 1
        assert "_tenants" in during["schemas"]
        assert during["database_acl"] != before["database_acl"]
        r = await client.delete("/tenants/legacy", params={"confirm": "legacy"})
        assert r.status_code == 204, r.text
    assert await fingerprint(pg_url, name, tag) == before
