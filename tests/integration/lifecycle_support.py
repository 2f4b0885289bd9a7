"""Helpers of the lifecycle tests: what a tenant's data is (a checksum of every table), and its credentials."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg

from service.store.db import with_database


async def checksums(url: str, database: str) -> dict[str, tuple[int, str]]:
    """Every table of the database (history included), with its row count and an md5 of its rows in order."""
    conn = await asyncpg.connect(with_database(url, database))
    try:
        tables = await conn.fetch(
            """SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"""
        )
        found: dict[str, tuple[int, str]] = {}
        for t in tables:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h "
                f"FROM {t['name']} x"
            )
            assert row is not None
            found[t["name"]] = (row["n"], row["h"])
        return found
    finally:
        await conn.close()


def password_of(connection_url: str) -> str:
    password = urlsplit(connection_url).password
    assert password is not None
    return password


def url_on(admin_url: str, role: str, password: str, database: str) -> str:
    parts = urlsplit(admin_url)
    return f"postgresql://{role}:{password}@{parts.hostname}:{parts.port or 5432}/{database}"


async def fetch(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()
