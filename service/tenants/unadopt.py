"""Give an adopted database back as it was: what ``DELETE`` undoes of an adoption, and what it leaves.

Adoption adds to a foreign database the ``_tenants`` schema (its history), and a later rotation the tenant's role
with its grants and default privileges, ``CONNECT`` revoked from ``PUBLIC`` and, on PostgreSQL 14 and older,
``CREATE`` on schema ``public`` revoked from ``PUBLIC``. What the database allowed before is recorded in the catalog
when it is adopted (:func:`observe`, ``tenants.adoption``, catalog_0008); ``DELETE`` drops the role and its grants
(``owned.drop_owned``), then :func:`restore` drops ``_tenants`` unless it was there before and gives ``PUBLIC``
back what it had.

It leaves what the tenant's owner asked for: the schema changes of migrations applied while it was managed (and
their rows in drizzle's own history table, which records them for drizzle-kit). Their ``_tenants`` rows go with the
schema: the database is back to an unmanaged one whose level is read from drizzle's rows or inferred.
"""

from __future__ import annotations

from typing import Any

from service.identifiers import quote_ident
from service.store.db import Conn

_OBSERVE = """
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '_tenants') AS tenants_schema,
       (SELECT datacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(datacl) a
                                         WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
        FROM pg_database WHERE datname = current_database()) AS public_connect,
       coalesce((SELECT nspacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(nspacl) a
                                                  WHERE a.grantee = 0 AND a.privilege_type = 'CREATE')
                 FROM pg_namespace WHERE nspname = 'public'), false) AS public_create
"""


async def observe(tconn: Conn) -> dict[str, Any]:
    """What adoption and rotation may change, as the database has it now (before adoption)."""
    row = await tconn.fetchrow(_OBSERVE)
    assert row is not None
    return dict(row)


async def restore(tconn: Conn, database: str, before: dict[str, Any]) -> None:
    """On a connection to the adopted database, after its role was dropped: undo the rest. Idempotent."""
    statements = []
    if not before.get("tenants_schema", True):
        statements.append("DROP SCHEMA IF EXISTS _tenants CASCADE")
    if before.get("public_connect"):
        statements.append(f"GRANT CONNECT ON DATABASE {quote_ident(database)} TO PUBLIC")
    if before.get("public_create"):
        statements.append("GRANT CREATE ON SCHEMA public TO PUBLIC")
    if statements:
        async with tconn.transaction():
            await tconn.execute(";\n".join(statements))
