"""A tenant's ``last_error``: what ended its last recorded operation in failure (a typed error, an outage, or an
unexpected one), cleared by the next operation that succeeds, in the same statement as the operation's end."""

from __future__ import annotations

import asyncpg
import pytest

from service.errors import ToolFailed
from service.store import catalog
from service.store.db import with_database
from service.tenants.steps import recorded


async def test_the_last_failed_operation_shows_on_the_tenant_until_one_succeeds(
    pg_url: str, tag: str, cleanup: None
) -> None:
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "cat_{tag}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(pg_url, f"cat_{tag}"))
    try:
        await catalog.upgrade(conn)
        await catalog.insert(conn, "le", "le", "d_le", "x")

        async def last_error() -> dict[str, object] | None:
            found = await catalog.get(conn, "le")
            assert found is not None
            return found.last_error

        with pytest.raises(ToolFailed):
            async with recorded(conn, "le", "backup"):
                raise ToolFailed("pg_dump failed", tool="pg_dump")
        error = await last_error()
        assert error is not None
        assert (error["op"], error["code"], error["message"], error["tool"]) == (
            "backup",
            "tool_failed",
            "pg_dump failed",
            "pg_dump",
        )
        assert error["at"]
        # an error that is not typed: an outage says so, anything else is an internal error (details in the log)
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            async with recorded(conn, "le", "move"):
                raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        assert (await last_error() or {}).get("code") == "database_unavailable"
        with pytest.raises(KeyError):
            async with recorded(conn, "le", "backup"):
                raise KeyError("a bug")
        assert await last_error() == {
            "op": "backup",
            "code": "internal_error",
            "message": "KeyError (the service log has the traceback)",
            "at": (await last_error() or {})["at"],
        }
        rows = await conn.fetch("SELECT kind, state, error->>'code' AS code FROM operations ORDER BY id")
        assert [tuple(r) for r in rows] == [
            ("backup", "failed", "tool_failed"),
            ("move", "failed", "database_unavailable"),
            ("backup", "failed", "internal_error"),
        ]
        async with recorded(conn, "le", "backup"):
            pass
        assert await last_error() is None
    finally:
        await conn.close()
