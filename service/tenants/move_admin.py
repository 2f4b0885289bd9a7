"""What a move needs of the source server's admin role, checked before anything is recorded, and the password the
target's role gets.

A move ends the tenant role's sessions on the source (``pg_terminate_backend``: a superuser, a member of
``pg_signal_backend``, or a member of the tenant's role may), and makes the role on the target with the source's
SCRAM verifier, read from ``pg_authid`` (a superuser only). An admin role with only ``CREATEDB CREATEROLE`` can do
neither: the refusal (``409 move_refused``, ``details.reason``) says what the operator runs. When the verifier
cannot be read, ``rotate_password`` is the alternative: the role gets a new password on the source first (a
``CREATEROLE`` admin may set it; from PostgreSQL 16 it needs ``ADMIN OPTION`` on the role, which the role's creator
has), and the target's role gets the same; the caller returns the new password.
"""

from __future__ import annotations

import asyncio
from typing import Final

from service.errors import MoveRefused
from service.identifiers import quote_ident
from service.store.db import Conn, PostgresError, Target
from service.tenants import credentials, roles

_ADMIN: Final = """
SELECT current_user AS name, rolsuper AS super,
       pg_has_role('pg_signal_backend', 'USAGE') OR pg_has_role($1, 'USAGE') AS may_signal
FROM pg_roles WHERE rolname = current_user"""


async def verifier_for_move(source: Target, role: str, *, rotate: bool) -> tuple[str, str | None]:
    """The SCRAM verifier the target's role gets, and the new password when ``rotate`` (set on the source now: the
    old one stops working at once). Raises MoveRefused (``details.reason``: ``cannot_end_sessions``,
    ``verifier_unreadable``, ``cannot_set_password``, ``no_password``) with the step that lifts it."""
    async with source.admin() as admin:
        found = await admin.fetchrow(_ADMIN, role)
        assert found is not None
        admin_role = str(found["name"])
        if not found["may_signal"]:
            raise MoveRefused(
                f"the admin role {admin_role} of server {source.name} may not end the tenant role's sessions, which a "
                f"move must do to stop writes on the source; a superuser runs: GRANT pg_signal_backend TO "
                f"{quote_ident(admin_role)} (or give server {source.name} a superuser's URL)",
                reason="cannot_end_sessions",
                server=source.name,
                admin_role=admin_role,
            )
        if rotate:
            return await _rotate(admin, source.name, admin_role, role)
        return await _read_verifier(admin, source.name, admin_role, role), None


async def _read_verifier(admin: Conn, server: str, admin_role: str, role: str) -> str:
    try:
        found = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    except PostgresError as exc:
        raise MoveRefused(
            f"the admin role {admin_role} of server {server} is not a superuser, so it cannot read the tenant role's "
            "password verifier (pg_authid), which the target needs for the same password to log in there. Either "
            f'give server {server} a superuser\'s URL, or move with "rotate_password": true (tenantctl move ID '
            "SERVER --rotate-password): the role gets a new password, returned in the answer, and the old one "
            "stops working at once",
            reason="verifier_unreadable",
            server=server,
            admin_role=admin_role,
            role=role,
        ) from exc
    if not found:
        raise MoveRefused(
            'the tenant\'s role has no password to carry over; move with "rotate_password": true to give it one',
            reason="no_password",
            role=role,
        )
    return str(found)


async def _rotate(admin: Conn, server: str, admin_role: str, role: str) -> tuple[str, str]:
    password = credentials.new_password()
    verifier = await asyncio.to_thread(credentials.scram_sha256, password)
    try:
        await roles.set_verifier(admin, role, verifier)
    except PostgresError as exc:
        raise MoveRefused(
            f"the admin role {admin_role} of server {server} may not set the tenant role's password; a superuser "
            f"runs: GRANT {quote_ident(role)} TO {quote_ident(admin_role)} WITH ADMIN OPTION",
            reason="cannot_set_password",
            server=server,
            admin_role=admin_role,
            role=role,
        ) from exc
    return verifier, password
