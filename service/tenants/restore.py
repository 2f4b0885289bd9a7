"""Restore a backup: in place (the tenant's data becomes exactly the backup's), or ``as`` a new tenant.

**In place.** The archive is restored into a new database beside the tenant's (``<prefix>_r<hex>``), granted to the
tenant's role, and checked (history rows against the files, schema against the expected one at the backup's
level); only then is it swapped in: the tenant's database is closed to connections, and in one transaction renamed
away (``<prefix>_o<hex>``) while the new one takes its name; then the old one is dropped. The role, its password and
the connection URL are untouched. Each step is recorded in the catalog first (``tenants.step``): recovery drops a
half-built copy, and finishes a swap that was recorded (the copy had passed its checks).

**As a new tenant.** A new tenant (own role and password, placed like a creation) whose database is made by
``pg_restore`` instead of the migrations; it goes through creation's ``provisioning`` → ``ready`` (or ``failed``,
its database and role dropped), so a crash is undone by the same recovery as an interrupted creation.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, NamedTuple

from service.errors import ServiceError, TenantDeleted, TenantExists
from service.identifiers import database_name, quote_ident, validate_tenant_id
from service.store import catalog, lifecycle, pgtools
from service.store.catalog import Tenant
from service.store.db import Conn, Target
from service.store.lifecycle import Backup
from service.tenants import backup, copies, credentials, owned, placement, roles
from service.tenants.context import Context
from service.tenants.steps import locked, ready, recorded

log = logging.getLogger(__name__)


class Restored(NamedTuple):
    tenant: Tenant
    # Only for a new tenant (``as``): its role's password, shown once.
    connection_url: str | None = None


async def restore(ctx: Context, tenant_id: str, backup_id: str, *, as_id: str | None = None) -> Restored:
    """Raises TenantNotFound, TenantNotReady, TenantBusy, BackupNotFound, VerificationFailed, ToolFailed; with
    ``as_id`` also TenantExists / TenantDeleted (the new id is taken), UnknownServer, NoCapacity."""
    validate_tenant_id(tenant_id)
    if as_id is not None and as_id != tenant_id:
        return await _as_new(ctx, tenant_id, backup_id, validate_tenant_id(as_id))
    async with locked(ctx, tenant_id) as lease:
        tenant = await ready(lease.conn, tenant_id)
        found = await backup.find(lease.conn, tenant_id, backup_id)
        async with recorded(lease.conn, tenant_id, "restore", {"backup": backup_id}):
            return Restored(await _in_place(ctx, lease.conn, tenant, found))


async def _in_place(ctx: Context, conn: Conn, tenant: Tenant, found: Backup) -> Tenant:
    prefix = ctx.settings.db_prefix
    step: dict[str, Any] = {
        "op": "restore",
        "stage": "build",
        "backup": found.id,
        "scratch": copies.side_name(prefix, "r"),
    }
    tenant = await lifecycle.set_step(conn, tenant.id, step, "restoring")
    target = ctx.target(tenant)
    try:
        ctx.failpoint("restore.after_record")
        level = await _build(ctx, target, tenant, step["scratch"], Path(found.file))
    except BaseException as exc:
        if isinstance(exc, Exception):
            await undo(ctx, conn, tenant)
        raise
    step = {**step, "stage": "swap", "trash": copies.side_name(prefix, "o"), "version": level}
    tenant = await lifecycle.set_step(conn, tenant.id, step)
    ctx.failpoint("restore.before_swap")
    return await finish(ctx, conn, tenant)


async def _build(ctx: Context, target: Target, tenant: Tenant, scratch: str, archive: Path) -> int | None:
    """The archive in a new database, granted to the tenant's role and checked; returns its level."""
    async with target.admin() as admin:
        await copies.create_empty(admin, scratch)
    ctx.failpoint("restore.after_scratch")
    tools = await copies.tools_for(target, copies.archive_tool_major(archive))
    await pgtools.restore_file(tools, target.admin_dsn, scratch, archive)
    return await _grant_and_check(ctx, target, tenant.database, scratch, tenant.server)


async def _grant_and_check(ctx: Context, target: Target, role: str, database: str, server: str) -> int | None:
    async with target.admin() as admin:
        await roles.grant_connect(admin, role, database)
    tconn = await target.connect(database, server_settings=ctx.server_settings())
    try:
        await roles.grant_objects(tconn, role)
        return await copies.check_schema(ctx, tconn, server)
    finally:
        await tconn.close()


async def finish(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    """Swap the checked copy in, drop the old database, mark the tenant ready at the backup's level. Idempotent:
    also how recovery finishes a swap a dead process recorded."""
    step: dict[str, Any] = tenant.step or {}
    database, scratch, trash = tenant.database, step["scratch"], step["trash"]
    await ctx.connections.forget(tenant.server, database)
    async with ctx.target(tenant).admin() as admin:
        if await copies.exists(admin, scratch):
            if await copies.exists(admin, database):
                await copies.close(admin, database)
                async with admin.transaction():
                    await admin.execute(f"ALTER DATABASE {quote_ident(database)} RENAME TO {quote_ident(trash)}")
                    await admin.execute(f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(database)}")
            else:
                await admin.execute(f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(database)}")
        ctx.failpoint("restore.after_swap")
        await copies.drop(admin, trash)
    await catalog.set_version(conn, tenant.id, step.get("version"), None)
    done = await lifecycle.set_step(conn, tenant.id, None, "ready")
    log.info("tenant restored", extra={"version": done.version})
    return done


async def undo(ctx: Context, conn: Conn, tenant: Tenant) -> Tenant:
    """Drop a copy that was not swapped in; the tenant is ready as it was."""
    step = tenant.step or {}
    async with ctx.target(tenant).admin() as admin:
        await copies.drop(admin, step["scratch"])
    return await lifecycle.set_step(conn, tenant.id, None, "ready")


async def recover(ctx: Context, conn: Conn, tenant: Tenant) -> None:
    """Finish a recorded swap, or drop a copy that had not reached it."""
    await (finish if (tenant.step or {}).get("stage") == "swap" else undo)(ctx, conn, tenant)


async def _as_new(ctx: Context, source_id: str, backup_id: str, new_id: str) -> Restored:
    async with ctx.server.catalog() as conn:
        found = await backup.find(conn, source_id, backup_id)
    async with locked(ctx, new_id) as lease:
        tenant = await _claim(ctx, lease.conn, new_id, found)
        async with recorded(lease.conn, new_id, "restore", {"from": source_id, "backup": backup_id}):
            try:
                password = await owned.create_role(ctx, lease.conn, tenant)
                await owned.create_database(ctx, lease.conn, tenant)
                target = ctx.target(tenant)
                tools = await copies.tools_for(target, copies.archive_tool_major(Path(found.file)))
                await pgtools.restore_file(tools, target.admin_dsn, tenant.database, Path(found.file))
                level = await _grant_and_check(ctx, target, tenant.database, tenant.database, tenant.server)
            except ServiceError:
                await owned.drop_owned(ctx, lease.conn, tenant)
                await catalog.remove(lease.conn, new_id)
                raise
            done = await catalog.mark(lease.conn, new_id, "ready", version=level)
    url = credentials.connection_url(target.admin_dsn, tenant.database, password, tenant.database)
    return Restored(done, url)


async def _claim(ctx: Context, conn: Conn, new_id: str, found: Backup) -> Tenant:
    """The new tenant's row, ``provisioning``, placed like a creation; TenantExists / TenantDeleted if taken."""
    existing = await catalog.get(conn, new_id)
    if existing is not None:
        raise (TenantDeleted if existing.state == "deleted" else TenantExists)(tenant=new_id)
    fingerprint = hashlib.sha256(f"restore:{found.tenant_id}:{found.id}".encode()).hexdigest()
    async with conn.transaction():
        server = (await placement.place(conn, ctx.servers, new_id, None)).name
        database = database_name(ctx.settings.db_prefix, new_id)
        tenant = await catalog.insert(conn, new_id, new_id, database, fingerprint, server=server)
    target = ctx.target(tenant)
    if await target.database_exists(tenant.database):
        await catalog.remove(conn, new_id)
        raise TenantExists("a database with the new tenant's name exists", tenant=new_id)
    return tenant
