"""Tenant ids, database names and SQL identifier quoting: the only place where names become SQL.

``CREATE DATABASE`` and ``DROP DATABASE`` cannot take bind parameters, so a name reaches SQL only after it has
matched a strict pattern here *and* been quoted by :func:`quote_ident`. Role passwords cannot be parameters either:
they go through :func:`quote_literal`. Everything else uses ``$n`` parameters.
"""

from __future__ import annotations

import re
from typing import Final

from service.errors import InvalidTenantId

TENANT_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_]{0,39}$"
PREFIX_PATTERN: Final = r"^[a-z_][a-z0-9_]{0,22}$"
# Any database name we touch (ours or an adopted one): what PostgreSQL accepts without surprises.
DATABASE_NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$"

_TENANT_ID = re.compile(TENANT_ID_PATTERN)
_PREFIX = re.compile(PREFIX_PATTERN)
_DATABASE_NAME = re.compile(DATABASE_NAME_PATTERN)


def is_tenant_id(value: object) -> bool:
    return isinstance(value, str) and _TENANT_ID.fullmatch(value) is not None


def validate_tenant_id(value: object) -> str:
    """Return ``value`` if it is a valid tenant id; raise :class:`InvalidTenantId` otherwise."""
    if not is_tenant_id(value):
        raise InvalidTenantId(value=repr(value)[:80])
    assert isinstance(value, str)
    return value


def validate_prefix(prefix: str) -> str:
    """A database-name prefix is at most 23 characters, so prefix + a 40-character id fits PostgreSQL's 63."""
    if _PREFIX.fullmatch(prefix) is None:
        raise ValueError(f"database prefix must match {PREFIX_PATTERN}, got {prefix!r}")
    return prefix


def database_name(prefix: str, tenant_id: str) -> str:
    return validate_prefix(prefix) + validate_tenant_id(tenant_id)


def validate_database_name(name: str) -> str:
    if _DATABASE_NAME.fullmatch(name) is None:
        raise ValueError(f"unsupported database name {name!r}")
    return name


def quote_ident(name: str) -> str:
    """Quote an SQL identifier the way PostgreSQL's ``quote_ident`` does (always quoted)."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string constant the way PostgreSQL's ``quote_literal`` does, for the few statements that take no
    bind parameters (``CREATE/ALTER ROLE ... PASSWORD``).

    Single quotes are doubled; a value with a backslash becomes an ``E'...'`` string with the backslashes doubled,
    so the result means the same whatever ``standard_conforming_strings`` is. Raises ``ValueError`` on a NUL byte,
    which no PostgreSQL string can hold.
    """
    if "\x00" in value:
        raise ValueError("string literal contains a NUL byte")
    quoted = "'" + value.replace("'", "''") + "'"
    if "\\" in value:
        return "E" + quoted.replace("\\", "\\\\")
    return quoted
