"""The facade the API, the CLI and the fleet call: one method per tenant operation, each a single call into the
module that owns it (``create``, ``queue``, ``migrate``, ``repair``, ``delete``, ``rotate``, ``recover``, ``reads``).

It holds no logic of its own; its state is the shared :class:`~service.tenants.context.Context`.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.store import catalog
from service.store.budget import Pressure
from service.store.catalog import Tenant
from service.store.db import Conn
from service.store.lifecycle import Backup
from service.store.listing import Browse, Listed
from service.tenants import backup, create, delete, migrate, move, queue, reads, recover, repair, restore, rotate
from service.tenants.context import Context
from service.tenants.create import Created, CreateRequest
from service.tenants.migrate import Upgrade
from service.tenants.repair import Accept
from service.tenants.status import SchemaStatus


class Provisioner(Context):
    """Every tenant operation, given its servers, files and settings as arguments (see :class:`Context`)."""

    async def create(self, request: CreateRequest, *, wait: bool = True) -> Created:
        return await (create.create(self, request) if wait else queue.enqueue(self, request))

    async def migrate(
        self, tenant_id: str, *, allow_out_of_order: bool = False, to_version: int | None = None
    ) -> SchemaStatus:
        return await migrate.migrate(self, tenant_id, allow_out_of_order=allow_out_of_order, to_version=to_version)

    async def migrate_on(self, conn: Conn, tenant_id: str, to_version: int) -> int | None:
        return await migrate.migrate_on(self, conn, tenant_id, to_version)

    async def upgrade_locked(self, tenant: Tenant, to_version: int) -> Upgrade:
        return await migrate.upgrade_locked(self, tenant, to_version)

    async def repair(self, tenant_id: str, accepts: Sequence[Accept]) -> SchemaStatus:
        return await repair.repair(self, tenant_id, accepts)

    async def delete(self, tenant_id: str, *, confirm: str | None, purge: bool = False) -> None:
        await delete.delete(self, tenant_id, confirm=confirm, purge=purge)

    async def undelete(self, tenant_id: str) -> Tenant:
        return await delete.undelete(self, tenant_id)

    async def rotate_credentials(self, tenant_id: str) -> str:
        return await rotate.rotate_credentials(self, tenant_id)

    async def backup(self, tenant_id: str, *, wait: bool = True) -> Backup:
        return await backup.backup(self, tenant_id, wait=wait)

    async def backups(self, tenant_id: str) -> list[Backup]:
        return await backup.listing(self, tenant_id)

    async def backup_info(self, tenant_id: str, backup_id: str) -> Backup:
        return await backup.info(self, tenant_id, backup_id)

    async def restore(self, tenant_id: str, backup_id: str, *, as_id: str | None = None) -> restore.Restored:
        return await restore.restore(self, tenant_id, backup_id, as_id=as_id)

    async def move(self, tenant_id: str, server: str, *, wait: bool = False, until_dropped: bool = False) -> Tenant:
        return await move.move(self, tenant_id, server, wait=wait, until_dropped=until_dropped)

    async def move_with_new_password(self, tenant_id: str, server: str, *, wait: bool = False) -> tuple[Tenant, str]:
        return await move.move_with_new_password(self, tenant_id, server, wait=wait)

    async def recover(self) -> int:
        return await recover.recover(self)

    async def settle(self, tenant_id: str) -> None:
        await recover.settle(self, tenant_id)

    def start(self) -> None:
        """Background work for the life of the process (:meth:`close` cancels it): the recovery loop, whose first
        pass runs now, and the creation queue's workers."""
        self.spawn(recover.loop(self))
        for _ in range(self.settings.queue_workers):
            self.spawn(queue.work(self))

    async def ping(self) -> list[Pressure]:
        return await reads.ping(self)

    async def get(self, tenant_id: str) -> Tenant:
        return await reads.get(self, tenant_id)

    async def events(self, tenant_id: str, limit: int) -> list[catalog.Event]:
        return await reads.events(self, tenant_id, limit)

    async def fleet(self) -> catalog.FleetCounts:
        """Fleet counts, at most ``fleet_cache_seconds`` old (dashboards poll; the aggregate reads every row)."""
        return await self.fleet_counts.get()

    async def list(self, *, state: str | None, after: str | None, limit: int) -> list[Tenant]:
        return await reads.page(self, state=state, after=after, limit=limit)

    async def list_by_status(
        self, status: str, *, state: str | None, after: str | None, limit: int
    ) -> tuple[Sequence[Tenant], str | None]:
        return await reads.page_by_status(self, status, state=state, after=after, limit=limit)

    async def browse(self, query: Browse) -> tuple[Sequence[Listed], int]:
        return await reads.browse(self, query)

    async def schema(self, tenant_id: str) -> SchemaStatus:
        return await reads.schema(self, tenant_id)
