"""Catalog queries of a tenant's life after creation (catalog_0006.sql): the step in flight, deleted tenants,
backups and drains. Functions take a connection; the caller owns transactions and locks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from service.store import audit
from service.store.catalog import _COLUMNS, State, Tenant, _tenant
from service.store.db import Conn


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


async def set_step(conn: Conn, tenant_id: str, step: dict[str, Any] | None, state: State | None = None) -> Tenant:
    """Record the step in flight (``None``: done), and the state with it when given, in one statement."""
    row = await conn.fetchrow(
        f"""UPDATE tenants SET step = $2::jsonb, state = coalesce($3, state), updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}""",
        tenant_id,
        _json(step),
        state,
    )
    assert row is not None
    return _tenant(row)


async def switch_server(conn: Conn, tenant_id: str, server: str, step: dict[str, Any]) -> Tenant:
    """The commit point of a move: the tenant lives on ``server`` (whose database and role are its own), ready."""
    row = await conn.fetchrow(
        f"""UPDATE tenants SET server = $2, state = 'ready', database_owned = true, role_owned = true,
                   step = $3::jsonb, updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}""",
        tenant_id,
        server,
        _json(step),
    )
    assert row is not None
    return _tenant(row)


async def mark_deleted(conn: Conn, tenant_id: str, deleted: bool) -> Tenant:
    """``deleted`` (now) or back to ``ready``; clears the step."""
    row = await conn.fetchrow(
        f"""UPDATE tenants SET state = CASE WHEN $2 THEN 'deleted' ELSE 'ready' END,
                   deleted_at = CASE WHEN $2 THEN now() END, step = NULL, updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}""",
        tenant_id,
        deleted,
    )
    assert row is not None
    return _tenant(row)


async def expired(conn: Conn, retention_seconds: float) -> list[str]:
    """Deleted tenants kept longer than the retention."""
    rows = await conn.fetch(
        """SELECT id FROM tenants WHERE state = 'deleted'
           AND deleted_at < now() - make_interval(secs => $1) ORDER BY id""",
        retention_seconds,
    )
    return [r["id"] for r in rows]


# -- backups ------------------------------------------------------------------------------------------------

_BACKUP_COLUMNS: Final = "id, tenant_id, state, version, server, file, size_bytes, sha256, created_at"


@dataclass(frozen=True, slots=True)
class Backup:
    id: str
    tenant_id: str
    state: str
    version: int | None
    server: str
    file: str
    size_bytes: int | None
    sha256: str | None
    created_at: datetime


def _backup(row: asyncpg.Record) -> Backup:
    return Backup(**dict(row))


async def begin_backup(conn: Conn, backup_id: str, tenant_id: str, version: int | None, server: str, file: str) -> None:
    await conn.execute(
        "INSERT INTO backups (id, tenant_id, state, version, server, file) VALUES ($1, $2, 'writing', $3, $4, $5)",
        backup_id,
        tenant_id,
        version,
        server,
        file,
    )


async def complete_backup(conn: Conn, backup_id: str, size_bytes: int, sha256: str) -> Backup:
    row = await conn.fetchrow(
        f"""UPDATE backups SET state = 'complete', size_bytes = $2, sha256 = $3 WHERE id = $1
            RETURNING {_BACKUP_COLUMNS}""",
        backup_id,
        size_bytes,
        sha256,
    )
    assert row is not None
    return _backup(row)


async def backups(conn: Conn, tenant_id: str, *, complete_only: bool = True) -> list[Backup]:
    """A tenant's backups, newest first."""
    rows = await conn.fetch(
        f"""SELECT {_BACKUP_COLUMNS} FROM backups WHERE tenant_id = $1 AND (NOT $2 OR state = 'complete')
            ORDER BY created_at DESC, id DESC""",
        tenant_id,
        complete_only,
    )
    return [_backup(r) for r in rows]


async def get_backup(conn: Conn, tenant_id: str, backup_id: str) -> Backup | None:
    row = await conn.fetchrow(
        f"SELECT {_BACKUP_COLUMNS} FROM backups WHERE tenant_id = $1 AND id = $2", tenant_id, backup_id
    )
    return None if row is None else _backup(row)


async def remove_backup(conn: Conn, backup_id: str) -> None:
    await conn.execute("DELETE FROM backups WHERE id = $1", backup_id)


async def unfinished_backups(conn: Conn) -> list[Backup]:
    rows = await conn.fetch(f"SELECT {_BACKUP_COLUMNS} FROM backups WHERE state = 'writing' ORDER BY id")
    return [_backup(r) for r in rows]


async def backup_files(conn: Conn) -> set[str]:
    """Every file the catalog knows (finished or being written)."""
    return {r["file"] for r in await conn.fetch("SELECT file FROM backups")}


# -- drains -------------------------------------------------------------------------------------------------
# A row of ``drains`` is the mark placement reads: the server takes no new tenants. The moves themselves are a
# rollout (kind ``drain``, catalog_0010.sql), whose id the row keeps.


async def draining(conn: Conn) -> set[str]:
    return {r["server"] for r in await conn.fetch("SELECT server FROM drains")}


async def mark_draining(conn: Conn, server: str, rollout_id: int) -> None:
    """The server takes no new tenants; ``rollout_id`` is the drain moving its tenants away."""
    await conn.execute(
        """INSERT INTO drains (server, actor, rollout_id) VALUES ($1, $2, $3)
           ON CONFLICT (server) DO UPDATE SET rollout_id = $3""",
        server,
        audit.actor.get(),
        rollout_id,
    )


async def end_drain(conn: Conn, server: str) -> tuple[bool, int | None]:
    """Undrain: the server takes tenants again. Whether it was draining, and its drain's rollout id."""
    row = await conn.fetchrow("DELETE FROM drains WHERE server = $1 RETURNING rollout_id", server)
    return row is not None, None if row is None else row["rollout_id"]
