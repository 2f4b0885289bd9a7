"""Commands on a tenant's life after creation: backup, backups, restore, undelete, move; drain and undrain."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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


@app.command()
def restore(
    tenant_id: IdArg,
    backup_id: Annotated[str, typer.Argument(help="Backup id (tenantctl backups ID).", show_default=False)],
    as_: Annotated[str | None, typer.Option("--as", help="Restore into a new tenant of this id instead.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup in place (checked, then swapped in), or --as a new tenant (prints its connection URL)."""
    body: dict[str, Any] = {"backup": backup_id}
    if as_ is not None:
        body["as"] = checked(as_)
    data = request("POST", f"/tenants/{checked(tenant_id)}/restore", json=body).json()
    human = f"{data['id']}  {data['state']}  version {data['version']}  server {data['server']}"
    if data.get("connection_url"):
        human += f"\nconnection_url: {data['connection_url']}"
    emit(data, as_json, human)


@app.command()
def undelete(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Bring a deleted tenant back (within the service's TENANTS_DELETE_RETENTION)."""
    data = request("POST", f"/tenants/{checked(tenant_id)}/undelete").json()
    emit(data, as_json, f"{data['id']}  {data['state']}  version {data['version']}  server {data['server']}")
