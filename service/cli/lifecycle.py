"""Commands on a tenant's life after creation: backup, backups, restore, undelete, move; drain and undrain."""

from __future__ import annotations

from typing import Any

from service.cli.app import app
from service.cli.output import IdArg, JsonOpt, checked, emit, request, table


def _backup_human(b: dict[str, Any]) -> str:
    return f"{b['id']}  {b['state']}  version {b['version']}  {b['size_bytes']} bytes  sha256 {b['sha256']}"


@app.command()
def backup(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Back up a tenant (pg_dump archive + manifest under the service's TENANTS_BACKUP_DIR)."""
    data = request("POST", f"/tenants/{checked(tenant_id)}/backups").json()
    emit(data, as_json, _backup_human(data))


@app.command()
def backups(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """List a tenant's backups, newest first."""
    items = request("GET", f"/tenants/{checked(tenant_id)}/backups").json()["items"]
    rows = [[b["id"], str(b["version"]), str(b["size_bytes"]), b["created_at"]] for b in items]
    emit(items, as_json, table(rows, ["ID", "VERSION", "BYTES", "CREATED"]))
