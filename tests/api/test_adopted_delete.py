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
       (SELECT array_agg(format('%s:%s:%s', d.defaclrole::regrole, d.defaclobjtype, d.defaclacl) ORDER BY 1)
        FROM pg_default_acl d) AS default_acls,
       (SELECT array_agg(format('%s.%s:%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod))
                         ORDER BY c.relname, a.attnum)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       (SELECT array_agg(format('%s:%s', c.relname, c.relowner::regrole) ORDER BY c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public') AS owners,
       (SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema') AS functions,
       (SELECT array_agg(extname ORDER BY extname) FROM pg_extension) AS extensions,
       (SELECT format('%s:%s:%s:%s', d.datdba::regrole, d.datconnlimit, d.datallowconn, d.datistemplate)
        FROM pg_database d WHERE d.datname = current_database()) AS database,
       (SELECT array_agg(s ORDER BY s) FROM pg_db_role_setting r, unnest(r.setconfig) s
        WHERE r.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())) AS settings,
       (SELECT array_agg(format('%s:%s', id, email) ORDER BY id) FROM accounts) AS data,
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
    app = f"x{tag}_app"
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:  # the schema of version 0, made by hand, with data, an application role of its own and its settings
        await conn.execute((OK / "0000_accounts.sql").read_text().replace("--> statement-breakpoint", ""))
        await conn.execute("INSERT INTO accounts (email) VALUES ('a@x'), ('b@x')")
        await conn.execute(f'CREATE ROLE "{app}"')
        await conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO "{app}"')
        await conn.execute(f'GRANT SELECT, INSERT ON accounts TO "{app}"')
        await conn.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{app}"')
        await conn.execute(f"ALTER DATABASE \"{name}\" SET work_mem = '8MB'")
        await conn.execute("CREATE FUNCTION app_answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
    finally:
        await conn.close()
    before = await fingerprint(pg_url, name, tag)

    async with serve(settings) as client:
        # Its own function is no version's: adopted at a named baseline, and migrated to the latest.
        r = await client.post("/tenants/legacy/adopt", json={"database": name, "baseline_version": 0, "migrate": True})
        assert r.status_code == 201, r.text
        # Its role, grants and default privileges, CONNECT revoked from PUBLIC.
        assert (await client.post("/tenants/legacy/credentials/rotate")).status_code == 200
        during = await fingerprint(pg_url, name, tag)
        assert during["roles"] == 2  # the application's and the tenant's
        assert "_tenants" in during["schemas"]
        assert during["database_acl"] != before["database_acl"]
        r = await client.delete("/tenants/legacy", params={"confirm": "legacy"})
        assert r.status_code == 204, r.text
    after = await fingerprint(pg_url, name, tag)
    # What DELETE leaves, as documented (tenants/unadopt.py): the schema change of the migration adoption applied
    # (the ok set's version 1 adds accounts.name). Everything else is as it was before adoption.
    assert after.pop("columns") == [*before.pop("columns"), "accounts.name:text"]
    assert after == before
