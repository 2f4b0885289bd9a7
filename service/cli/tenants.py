"""Commands on one tenant: create, status, list, migrate, delete, credentials, drift, adopt."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.app import app
from service.cli.output import IdArg, JsonOpt, checked, emit, fail, request, table


def _tenant_human(t: dict[str, Any]) -> str:
    version = "-" if t["version"] is None else t["version"]
    text = f"{t['id']}  {t['state']}  version {version}/{t['latest_version']}  database {t['database']}"
    if t.get("error"):
        text += f"\nerror: {t['error'].get('code')}: {t['error'].get('message')}"
    if t.get("connection_url"):
        text += f"\nconnection_url: {t['connection_url']}"
        text += f"\n(shown once; `tenantctl rotate-credentials {t['id']}` makes a new password)"
    return text


def _schema_human(s: dict[str, Any]) -> str:
    current = "-" if s["current_version"] is None else s["current_version"]
    lines = [f"{s['tenant']}  {s['status']}  version {current}/{s['latest_version']}  database {s['database']}"]
    for label in ("pending", "modified", "untracked", "out_of_order"):
        if s.get(label):
            lines.append(f"{label}: " + ", ".join(f"{m['version']:04d}_{m['name']}" for m in s[label]))
    if s.get("error"):
        lines.append(f"error: {s['error'].get('code')}: {s['error'].get('message')}")
    return "\n".join(lines)


@app.command()
def create(
    tenant_id: IdArg,
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    seed: Annotated[list[str] | None, typer.Option(help="KEY=VALUE given to seed files; repeatable.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="replay or clone (copy of a checked template); default: the service's setting.")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Database server to create it on; default: the least loaded with room.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant (idempotent: the same command again succeeds)."""
    values: dict[str, str] = {}
    for item in seed or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--seed expects KEY=VALUE, got {item!r}", 2)
        values[key] = value
    body: dict[str, Any] = {"id": checked(tenant_id), "seed": values}
    if name is not None:
        body["name"] = name
    if strategy is not None:
        body["strategy"] = strategy
    if server is not None:
        body["server"] = server
    data = request("POST", "/tenants", json=body).json()
    emit(data, as_json, _tenant_human(data))


@app.command()
def status(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show a tenant's migration level."""
    data = request("GET", f"/tenants/{checked(tenant_id)}/schema").json()
    emit(data, as_json, _schema_human(data))


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="Only tenants in this lifecycle state.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only tenants whose schema has this status (e.g. modified, behind).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List every tenant."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"state": state, "status": status, "cursor": cursor, "limit": 500}
        params = {k: v for k, v in query.items() if v is not None}
        page = request("GET", "/tenants", params=params).json()
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    rows = [[t["id"], t["state"], str(t["version"]), t["database"]] for t in items]
    emit(items, as_json, table(rows, ["ID", "STATE", "VERSION", "DATABASE"]))


@app.command()
def migrate(
    tenant_id: IdArg,
    allow_out_of_order: Annotated[bool, typer.Option(help="Apply pending files older than the newest.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply a tenant's pending migrations."""
    data = request(
        "POST", f"/tenants/{checked(tenant_id)}/migrate", json={"allow_out_of_order": allow_out_of_order}
    ).json()
    emit(data, as_json, _schema_human(data))


@app.command()
def delete(
    tenant_id: IdArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm.")] = False,
    purge: Annotated[bool, typer.Option(help="Drop everything now (no undelete).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a tenant: closed and kept for undelete (TENANTS_DELETE_RETENTION), or --purge to drop it now."""
    if not yes:
        fail(f"refusing to delete {tenant_id!r} without --yes", 2)
    params = {"confirm": tenant_id, **({"purge": "true"} if purge else {})}
    request("DELETE", f"/tenants/{checked(tenant_id)}", params=params)
    emit({"deleted": tenant_id, "purged": purge}, as_json, f"{'purged' if purge else 'deleted'} {tenant_id}")


@app.command("rotate-credentials")
def rotate_credentials(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Give a tenant's login role a new password and print its connection URL (the old password stops working)."""
    data = request("POST", f"/tenants/{checked(tenant_id)}/credentials/rotate").json()
    emit(data, as_json, data["connection_url"])


def _drift_human(d: dict[str, Any]) -> str:
    version = "-" if d["version"] is None else d["version"]
    lines = [f"{d['tenant']}  {'clean' if d['clean'] else 'drifted'}  version {version}  checked {d['checked_at']}"]
    for diff in d["differences"]:
        line = f"  {diff['change']:<10}  {diff['object']:<11}  {diff['name']}"
        if diff["change"] == "changed":
            line += ": " + "; ".join(
                f"{k} {diff['expected'][k]!r} -> {diff['actual'][k]!r}" for k in sorted(diff["expected"])
            )
        lines.append(line)
    return "\n".join(lines)


@app.command()
def drift(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Compare a tenant's live schema with the expected one at its level; exit 1 when it has drifted."""
    data = request("GET", f"/tenants/{checked(tenant_id)}/drift").json()
    emit(data, as_json, _drift_human(data))
    if not data["clean"]:
        raise typer.Exit(1)


@app.command()
def adopt(
    tenant_id: IdArg,
    database: Annotated[str, typer.Option(help="The existing database (it keeps its name and data).")],
    migrate: Annotated[bool, typer.Option(help="Apply the pending migrations afterwards.")] = False,
    baseline_version: Annotated[
        int | None, typer.Option(help="Level to record when it cannot be read or inferred exactly.")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Database server it is on; default: default, or the only server.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring an existing database under management as a tenant (DELETE later only forgets it)."""
    body: dict[str, Any] = {"database": database, "migrate": migrate}
    if baseline_version is not None:
        body["baseline_version"] = baseline_version
    if server is not None:
        body["server"] = server
    data = request("POST", f"/tenants/{checked(tenant_id)}/adopt", json=body).json()
    emit(data, as_json, _schema_human(data))
