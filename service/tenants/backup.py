"""Back up one tenant: a ``pg_dump`` archive of its database (history included) and a manifest beside it.

The catalog row is inserted ``writing`` before ``pg_dump`` starts; the archive is written to a temporary file,
fsynced, hashed and renamed (``store.pgtools``), the manifest written the same way, and only then is the row
``complete``. A crash leaves a ``writing`` row and at most a temporary file: recovery removes both, so a
half-written backup never appears as one. ``TENANTS_BACKUP_RETENTION`` keeps the newest N per tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from service.errors import BackupNotFound, ServiceError, TenantNotFound
from service.identifiers import validate_tenant_id
from service.store import catalog, lifecycle, pgtools
from service.store.catalog import Tenant
from service.store.db import Conn
from service.store.lifecycle import Backup
from service.store.locks import Lease
from service.tenants import copies
from service.tenants.context import Context
from service.tenants.steps import locked, ready, recorded

log = logging.getLogger(__name__)

ARCHIVE: Final = ".dump"
MANIFEST: Final = ".json"


def new_id() -> str:
    """Sortable by time, unique: ``20261206T023000123456Z-1a2b``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(2)}"


async def backup(ctx: Context, tenant_id: str, *, wait: bool = True) -> Backup:
    """Take a backup of a ready tenant; with ``wait=False`` return it ``writing`` and finish in the background
    (which keeps the tenant's lock). Raises TenantNotFound, TenantNotReady, TenantBusy, ToolFailed."""
    if wait:
        async with locked(ctx, tenant_id) as lease:
            tenant = await ready(lease.conn, tenant_id)
            async with recorded(lease.conn, tenant_id, "backup"):
                return await take(ctx, lease.conn, tenant)
    validate_tenant_id(tenant_id)
    lease = await ctx.locks.acquire(tenant_id)
    try:
        tenant = await ready(lease.conn, tenant_id)
        backup_id = new_id()
        await _begin(ctx, lease.conn, tenant, backup_id)
        found = await lifecycle.get_backup(lease.conn, tenant_id, backup_id)
        assert found is not None
    except BaseException:
        await lease.release()
        raise
    ctx.spawn(_in_background(ctx, lease, tenant, backup_id))
    return found


async def _in_background(ctx: Context, lease: Lease, tenant: Tenant, backup_id: str) -> None:
    try:
        async with recorded(lease.conn, tenant.id, "backup", {"id": backup_id}):
            await _write(ctx, lease.conn, tenant, backup_id)
    except Exception as exc:
        log.warning("background backup %s of %s failed: %s", backup_id, tenant.id, exc)
        with contextlib.suppress(ServiceError):
            await discard(ctx, lease.conn, backup_id)
    finally:
        await lease.release()


def _paths(ctx: Context, tenant_id: str, backup_id: str) -> tuple[Path, Path]:
    folder = ctx.settings.backup_path.resolve() / tenant_id
    return folder / f"{backup_id}{ARCHIVE}", folder / f"{backup_id}{MANIFEST}"


async def _begin(ctx: Context, conn: Conn, tenant: Tenant, backup_id: str) -> None:
    archive, _ = _paths(ctx, tenant.id, backup_id)
    await lifecycle.begin_backup(conn, backup_id, tenant.id, tenant.version, tenant.server, str(archive))


async def take(ctx: Context, conn: Conn, tenant: Tenant) -> Backup:
    """Write a backup of ``tenant`` (whose lock the caller holds) and prune the old ones."""
    backup_id = new_id()
    await _begin(ctx, conn, tenant, backup_id)
    try:
        return await _write(ctx, conn, tenant, backup_id)
    except BaseException:
        with contextlib.suppress(ServiceError):
            await discard(ctx, conn, backup_id)
        raise


async def _write(ctx: Context, conn: Conn, tenant: Tenant, backup_id: str) -> Backup:
    ctx.failpoint("backup.after_record")
    target = ctx.target(tenant)
    archive, manifest = _paths(ctx, tenant.id, backup_id)
    tools = await copies.tools_for(target)
    written = await pgtools.dump_to_file(tools, target.admin_dsn, tenant.database, archive)
    created = datetime.now(UTC)
    about = {
        "id": backup_id,
        "tenant": tenant.id,
        "version": tenant.version,
        "server": tenant.server,
        "database": tenant.database,
        "format": "pg_dump custom archive",
        "tool_major": tools.major,
        "archive": archive.name,
        "size_bytes": written.size_bytes,
        "sha256": written.sha256,
        "created_at": created.isoformat(),
    }
    pgtools.write_atomically(manifest, json.dumps(about, indent=2).encode())
    ctx.failpoint("backup.before_complete")
    done = await lifecycle.complete_backup(conn, backup_id, written.size_bytes, written.sha256)
    await prune(ctx, conn, tenant.id)
    log.info("backup written", extra={"backup": backup_id, "size_bytes": written.size_bytes})
    return done


async def prune(ctx: Context, conn: Conn, tenant_id: str, keep: int | None = None) -> None:
    """Keep the newest ``keep`` backups (TENANTS_BACKUP_RETENTION): the row goes first, then its files (a crash
    between leaves files no row names, which recovery removes)."""
    kept = ctx.settings.backup_retention if keep is None else keep
    for old in (await lifecycle.backups(conn, tenant_id))[kept:]:
        await discard(ctx, conn, old.id, old)


async def discard(ctx: Context, conn: Conn, backup_id: str, found: Backup | None = None) -> None:
    """Remove a backup: its row, then its archive, manifest and temporary file."""
    if found is None:
        rows = await conn.fetch("SELECT file FROM backups WHERE id = $1", backup_id)
        files = [Path(r["file"]) for r in rows]
    else:
        files = [Path(found.file)]
    await lifecycle.remove_backup(conn, backup_id)
    for archive in files:
        _remove_files(archive)


def _remove_files(archive: Path) -> None:
    manifest = archive.with_suffix(MANIFEST)
    for path in (
        archive,
        archive.with_name(archive.name + ".tmp"),
        manifest,
        manifest.with_name(manifest.name + ".tmp"),
    ):
        path.unlink(missing_ok=True)


async def listing(ctx: Context, tenant_id: str) -> list[Backup]:
    """A tenant's complete backups, newest first (also a deleted tenant's). Raises TenantNotFound."""
    validate_tenant_id(tenant_id)
    async with ctx.server.catalog() as conn:
        if await catalog.get(conn, tenant_id) is None:
            raise TenantNotFound(tenant=tenant_id)
        return await lifecycle.backups(conn, tenant_id)


async def info(ctx: Context, tenant_id: str, backup_id: str) -> Backup:
    """One backup of the tenant, complete or being written; BackupNotFound."""
    validate_tenant_id(tenant_id)
    async with ctx.server.catalog() as conn:
        found = await lifecycle.get_backup(conn, tenant_id, backup_id)
    if found is None:
        raise BackupNotFound(tenant=tenant_id, backup=backup_id)
    return found


async def find(conn: Conn, tenant_id: str, backup_id: str) -> Backup:
    """A complete backup of the tenant, its archive present and whole; BackupNotFound otherwise."""
    found = await lifecycle.get_backup(conn, tenant_id, backup_id)
    if found is None or found.state != "complete":
        raise BackupNotFound(tenant=tenant_id, backup=backup_id)
    if await asyncio.to_thread(_damaged, Path(found.file), found.sha256):
        raise BackupNotFound("the backup's archive is missing or damaged", tenant=tenant_id, backup=backup_id)
    return found


def _damaged(path: Path, sha256: str | None) -> bool:
    return not path.is_file() or pgtools.sha256_of(path) != sha256


async def remove_all(ctx: Context, conn: Conn, tenant_id: str) -> None:
    """Every backup of a tenant (a purge)."""
    for old in await lifecycle.backups(conn, tenant_id, complete_only=False):
        await discard(ctx, conn, old.id, old)
    with contextlib.suppress(OSError):
        (ctx.settings.backup_path.resolve() / tenant_id).rmdir()


async def leftovers(ctx: Context, conn: Conn) -> set[str]:
    """Tenants that may have backup leftovers: a row still ``writing``, or a folder under the backup directory."""
    found = {b.tenant_id for b in await lifecycle.unfinished_backups(conn)}
    root = ctx.settings.backup_path.resolve()
    if root.is_dir():
        found |= {p.name for p in root.iterdir() if p.is_dir()}
    return found


async def clean(ctx: Context, conn: Conn, tenant_id: str) -> int:
    """Under the tenant's lock: remove its backups left ``writing`` by a dead process and the files in its folder
    that no catalog row names (a temporary file, a pruned backup's). Returns how many were removed."""
    removed = 0
    for left in await lifecycle.unfinished_backups(conn):
        if left.tenant_id == tenant_id:
            await discard(ctx, conn, left.id, left)
            removed += 1
    folder = ctx.settings.backup_path.resolve() / tenant_id
    if not folder.is_dir():
        return removed
    known = await lifecycle.backup_files(conn)
    for path in folder.iterdir():
        if str(folder / (path.name.split(".", 1)[0] + ARCHIVE)) not in known:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
