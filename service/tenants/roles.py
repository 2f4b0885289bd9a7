"""Per-tenant login roles: made with the tenant, confined to its database, dropped with it.

A tenant role is named like its database. It can log in to that database only (``CONNECT`` is revoked from
``PUBLIC`` there and granted to the role), and use the tables, sequences and functions of schema ``public``: those
the migrations made, and, through default privileges of the admin role that runs migrations, those later migrations
make. It gets nothing on the service's ``_tenants`` schema (its history), and has no ``CREATEDB``, ``CREATEROLE``,
``SUPERUSER``, ``REPLICATION`` or ``BYPASSRLS``.

Names and passwords cannot be bind parameters in these statements: names go through ``quote_ident``, the password
(its SCRAM verifier, see :mod:`service.credentials`) through ``quote_literal``.
"""

from __future__ import annotations

from typing import Final

from service.errors import RoleExists, RolePrivileged
from service.identifiers import quote_ident, quote_literal
from service.store.db import Conn, PostgresError, sqlstate
from service.tenants.credentials import scram_sha256

DUPLICATE_OBJECT: Final = "42710"
DEPENDENT_OBJECTS_STILL_EXIST: Final = "2BP01"
INSUFFICIENT_PRIVILEGE: Final = "42501"
_ATTRIBUTES: Final = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
# What a tenant role must be: pg_roles column -> the keyword that makes it so.
_EXPECTED: Final = {
    "rolcanlogin": (True, "LOGIN"),
    "rolsuper": (False, "NOSUPERUSER"),
    "rolcreatedb": (False, "NOCREATEDB"),
    "rolcreaterole": (False, "NOCREATEROLE"),
    "rolreplication": (False, "NOREPLICATION"),
    "rolbypassrls": (False, "NOBYPASSRLS"),
}
_TABLES: Final = "SELECT, INSERT, UPDATE, DELETE"
_SEQUENCES: Final = "USAGE, SELECT, UPDATE"


async def exists(conn: Conn, role: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role))


async def create(conn: Conn, role: str, password: str | None = None, *, verifier: str | None = None) -> None:
    """Create the login role with ``password``, or with the SCRAM ``verifier`` of one (a queued creation keeps only
    that); raise :class:`RoleExists` if a role of that name exists."""
    if verifier is None:
        if password is None:
            raise ValueError("a password or its verifier is required")
        verifier = scram_sha256(password)
    try:
        await conn.execute(f"CREATE ROLE {quote_ident(role)} {_ATTRIBUTES} PASSWORD {quote_literal(verifier)}")
    except PostgresError as exc:
        if sqlstate(exc) == DUPLICATE_OBJECT:
            raise RoleExists(role=role) from exc
        raise


async def set_verifier(conn: Conn, role: str, verifier: str) -> None:
    """A new password, given as its SCRAM verifier (only the password: see :func:`set_password`)."""
    await conn.execute(f"ALTER ROLE {quote_ident(role)} PASSWORD {quote_literal(verifier)}")


async def set_password(conn: Conn, role: str, password: str) -> None:
    """Only the password: on PostgreSQL 15 and older, naming ``NOSUPERUSER``, ``NOREPLICATION`` or
    ``NOBYPASSRLS`` in ``ALTER ROLE`` needs superuser even when nothing changes (see :func:`assert_attributes`)."""
    await conn.execute(f"ALTER ROLE {quote_ident(role)} PASSWORD {_verifier(password)}")


async def assert_attributes(conn: Conn, role: str) -> None:
    """Make the role a plain login again if someone changed it, naming only the attributes that differ.

    Raises RolePrivileged when the admin role may not change them (e.g. a superuser made it ``SUPERUSER``).
    """
    row = await conn.fetchrow(f"SELECT {', '.join(_EXPECTED)} FROM pg_roles WHERE rolname = $1", role)
    if row is None:
        return
    wrong = [keyword for column, (value, keyword) in _EXPECTED.items() if row[column] != value]
    if not wrong:
        return
    try:
        await conn.execute(f"ALTER ROLE {quote_ident(role)} {' '.join(wrong)}")
    except PostgresError as exc:
        if sqlstate(exc) == INSUFFICIENT_PRIVILEGE:
            raise RolePrivileged(role=role, attributes=wrong) from exc
        raise


async def grant_connect(conn: Conn, role: str, database: str) -> None:
    """Let ``role``, and no other role but the admin (owner), connect to ``database``."""
    db = quote_ident(database)
    await conn.execute(
        f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {quote_ident(role)}"
    )


async def grant_objects(tconn: Conn, role: str) -> None:
    """On a connection to the tenant database, as the admin role that runs migrations: give ``role`` the use of
    schema ``public`` (existing objects and, by default privileges, future ones). Idempotent."""
    owner = quote_ident(await tconn.fetchval("SELECT current_user"))
    r = quote_ident(role)
    defaults = f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT"
    statements = [
        # PostgreSQL < 15 lets PUBLIC create in schema public; the schema belongs to the migrations.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {r}",
        f"GRANT {_TABLES} ON ALL TABLES IN SCHEMA public TO {r}",
        f"GRANT {_SEQUENCES} ON ALL SEQUENCES IN SCHEMA public TO {r}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {r}",
        f"{defaults} {_TABLES} ON TABLES TO {r}",
        f"{defaults} {_SEQUENCES} ON SEQUENCES TO {r}",
        f"{defaults} EXECUTE ON FUNCTIONS TO {r}",
    ]
    async with tconn.transaction():
        await tconn.execute(";\n".join(statements))


async def drop(conn: Conn, role: str) -> bool:
    """Drop the role if it exists; ``False`` when it still holds privileges in a database that is not dropped
    (an adopted one): run :func:`disown` there, then drop again."""
    try:
        await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(role)}")
    except PostgresError as exc:
        if sqlstate(exc) == DEPENDENT_OBJECTS_STILL_EXIST:
            return False
        raise
    return True


async def disown(tconn: Conn, role: str) -> None:
    """On a connection to the tenant database: revoke what ``role`` was granted there (and on the database)."""
    await tconn.execute(f"DROP OWNED BY {quote_ident(role)}")


def _verifier(password: str) -> str:
    return quote_literal(scram_sha256(password))
