"""Tenant roles reach their own database only: what the service closes on a server at start, and what it reports.

PostgreSQL lets ``PUBLIC`` (every role) connect to a new database, so a tenant role could log in to ``postgres``,
``template1`` and every database that keeps that default. Each tenant database revokes it (``tenants/roles.py``);
here, at start, the service revokes it where it is *entitled* to, on each server that answers:

- the catalog database (the service made it);
- the databases named in ``TENANTS_REVOKE_CONNECT`` (an operator's decision: on a server shared with other users,
  revoking ``CONNECT`` on ``postgres`` locks out every non-superuser role that relies on ``PUBLIC``), and on the
  embedded cluster, which the service owns outright, ``postgres`` and ``template1``.

Its scratch databases revoke it when made, and its templates allow no connections at all. Every other database
``PUBLIC`` may still connect to is logged with the one-line step its owner runs.

PostgreSQL 14 and older also let ``PUBLIC`` create objects in schema ``public``, so a role could plant a function
there that an admin session later calls by mistake. The databases the admin sessions use (the maintenance database
of each server, the catalog) must not allow it: the service revokes it, and refuses to start (ServerInsecure) when
it may not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

from service.errors import DatabaseUnavailable, ServerInsecure
from service.identifiers import quote_ident
from service.store.budget import endpoint
from service.store.db import LOCK_NAMESPACE, Conn, PostgresError, Servers

log = logging.getLogger(__name__)

EMBEDDED_REVOKES: Final = ("postgres", "template1")
# Databases PUBLIC may connect to (datacl NULL is the default, which grants it).
_OPEN_TO_PUBLIC: Final = """
SELECT datname FROM pg_database
WHERE datallowconn AND (datacl IS NULL OR EXISTS (
    SELECT 1 FROM aclexplode(datacl) a WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT'))
ORDER BY datname"""
_PUBLIC_MAY_CREATE: Final = """
SELECT nspacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(nspacl) a WHERE a.grantee = 0 AND a.privilege_type = 'CREATE')
FROM pg_namespace WHERE nspname = 'public'"""


async def revoke_connect(admin: Conn, databases: Iterable[str]) -> list[str]:
    """Revoke ``CONNECT`` from ``PUBLIC`` on those of ``databases`` that exist (a no-op where the admin role is not
    the owner); return the databases ``PUBLIC`` may still connect to on the server, logged with the step to take."""
    existing = {r["datname"] for r in await admin.fetch("SELECT datname FROM pg_database")}
    # Replicas starting together would collide on the pg_database row ("tuple concurrently updated").
    async with admin.transaction():
        await admin.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_NAMESPACE)
        for name in sorted(set(databases) & existing):
            await admin.execute(f"REVOKE CONNECT ON DATABASE {quote_ident(name)} FROM PUBLIC")
    still = [r["datname"] for r in await admin.fetch(_OPEN_TO_PUBLIC)]
    if still:
        log.warning(
            "tenant roles can log in to these databases, which keep PostgreSQL's default CONNECT for PUBLIC: %s; "
            "to close one, its owner runs: REVOKE CONNECT ON DATABASE <name> FROM PUBLIC; "
            "(or list it in TENANTS_REVOKE_CONNECT if the service's admin role owns it)",
            ", ".join(still),
        )
    return still


async def forbid_public_create(conn: Conn, database: str) -> None:
    """On a connection to a database admin sessions use: make sure ``PUBLIC`` cannot create in schema ``public``.

    Raises ServerInsecure when it can and the admin role may not revoke it (PostgreSQL 14 and older: the schema
    belongs to the bootstrap superuser)."""
    if not await conn.fetchval(_PUBLIC_MAY_CREATE):
        return
    with contextlib.suppress(PostgresError):  # not the owner: checked just below
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    if await conn.fetchval(_PUBLIC_MAY_CREATE):
        raise ServerInsecure(
            f"every role may create objects in schema public of database {database}, which the service's admin "
            f"sessions use (PostgreSQL 14 and older grant it by default); a superuser or the schema's owner runs, in "
            f"that database: REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
            database=database,
        )


def revokes(configured: Sequence[str], *, embedded: bool, catalog: str | None) -> list[str]:
    """The databases whose CONNECT the service revokes from PUBLIC on a server."""
    names = [*configured, *(EMBEDDED_REVOKES if embedded else ())]
    return [*names, catalog] if catalog is not None else names


async def isolate(servers: Servers, configured: Sequence[str], *, embedded: bool) -> None:
    """At start, on every server that answers: revoke what the service is entitled to, report the rest, and check
    the databases admin sessions use. Raises ServerInsecure (the service must not start)."""
    catalog = servers.catalog
    for target in servers:
        same = endpoint(target.admin_dsn) == endpoint(catalog.admin_dsn)
        names = revokes(configured, embedded=embedded, catalog=catalog.catalog_database if same else None)
        try:
            async with target.admin() as admin:
                await revoke_connect(admin, names)
                await forbid_public_create(admin, target.maintenance_database)
        except DatabaseUnavailable as exc:  # checked at its next start; its tenants are unavailable meanwhile
            log.warning("cannot check the isolation of server %s: %s", target.name, exc.message)
    async with catalog.catalog() as conn:
        await forbid_public_create(conn, catalog.catalog_database)
    if not any(endpoint(t.admin_dsn) == endpoint(catalog.admin_dsn) for t in servers):
        # The catalog's server holds no tenants, but start-up sessions use its maintenance database too.
        maintenance = urlsplit(catalog.admin_dsn).path.lstrip("/") or "postgres"
        conn = await catalog.connect(maintenance)
        try:
            await forbid_public_create(conn, maintenance)
        finally:
            await conn.close()
