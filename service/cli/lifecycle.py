"""Commands on a tenant's life after creation: backup, backups, restore, undelete, move; drain and undrain."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.app import app
from service.cli.output import IdArg, JsonOpt, checked, emit, fail, request, table


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


_MOVE_STAGES = ("start", "target", "frozen", "copy", "cleanup")
_MOVE_POLL = 0.5


def _follow_move(tenant: dict[str, Any]) -> dict[str, Any]:
    """Poll until the move ends, with a progress bar of its stages on stderr; return the tenant."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"move {tenant['id']}"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=len(_MOVE_STAGES))
        while True:
            stage = (tenant.get("progress") or {}).get("stage")
            done = _MOVE_STAGES.index(stage) if stage in _MOVE_STAGES else len(_MOVE_STAGES)
            bar.update(task, completed=done, description=stage or tenant["state"])
            if tenant["state"] != "moving":  # ready: on the new server (its source may still be dropped), or undone
                bar.update(task, completed=len(_MOVE_STAGES), description=tenant["state"])
                return tenant
            time.sleep(_MOVE_POLL)
            tenant = request("GET", f"/tenants/{tenant['id']}").json()


@app.command()
def move(
    tenant_id: IdArg,
    server: Annotated[str, typer.Argument(help="The server to move it to.", show_default=False)],
    wait: Annotated[bool, typer.Option(help="Follow it with a progress bar until it ends.")] = False,
    rotate_password: Annotated[
        bool,
        typer.Option(
            help="Give the role a new password (printed; the old one stops working at once): for a server whose "
            "admin role is not a superuser."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move a tenant to another server (writes stop on the source for the copy); exit 1 if it did not arrive."""
    body = {"server": server, "rotate_password": rotate_password}
    data = request("POST", f"/tenants/{checked(tenant_id)}/move", json=body).json()
    url = data.get("connection_url")
    if wait:
        data = _follow_move(data)
    if url:
        data["connection_url"] = url
    human = f"{data['id']}  {data['state']}  server {data['server']}" + (f"\nnew connection URL: {url}" if url else "")
    emit(data, as_json, human)
    if wait and data["server"] != server:
        fail(f"the move of {tenant_id} did not complete; see tenantctl events or GET /tenants/{tenant_id}/events")


def _drain_human(d: dict[str, Any]) -> str:
    if not d["draining"]:
        return f"{d['server']}  not draining  {d['tenants']} tenant(s)"
    line = f"{d['server']}  drain {d['state']}  {d['tenants']} left  {d['moved']} moved  {d['failed']} failed"
    if d.get("rollout") is not None:
        line += f"  (tenantctl rollouts show {d['rollout']})"
    failures = [f"failed: {t}: {e.get('code')}: {e.get('message')}" for t, e in (d.get("failures") or {}).items()]
    return "\n".join([line, *failures])


@app.command()
def drain(
    server: Annotated[str, typer.Argument(help="Server name.", show_default=False)],
    concurrency: Annotated[int, typer.Option(help="Tenants moved at once.", min=1, max=32)] = 2,
    max_failures: Annotated[int, typer.Option(help="Failed moves tolerated.", min=0)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Stop placing tenants on a server and move its tenants to the others (GET /servers/{name}/drain follows it)."""
    body = {"concurrency": concurrency, "max_failures": max_failures}
    data = request("POST", f"/servers/{server}/drain", json=body).json()
    emit(data, as_json, _drain_human(data))


@app.command()
def undrain(
    server: Annotated[str, typer.Argument(help="Server name.", show_default=False)], as_json: JsonOpt = False
) -> None:
    """Let a drained (or draining) server take tenants again."""
    data = request("POST", f"/servers/{server}/undrain").json()
    emit(data, as_json, _drain_human(data))
