"""Commands on one tenant: create, show, list, status, events, migrate, repair, delete, credentials, drift, adopt."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.app import app
from service.cli.choices import State, Status, Strategy
from service.cli.output import IdArg, JsonOpt, checked, emit, fail, request, table

# Seconds between two looks at a tenant being created in the background (create --async --wait).
_CREATE_POLL = 0.3


def _tenant_human(t: dict[str, Any]) -> str:
    version = "-" if t["version"] is None else t["version"]
    text = f"{t['id']}  {t['state']}  version {version}/{t['latest_version']}  database {t['database']}"
    text += f"  server {t['server']}"
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


def _seed(items: list[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--seed expects KEY=VALUE, got {item!r}", 2)
        values[key] = value
    return values


def _until_built(tenant: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Poll until the tenant is built (neither queued nor provisioning); keep the first answer's connection URL."""
    import time

    current = tenant
    while current["state"] in ("queued", "provisioning"):
        time.sleep(_CREATE_POLL)
        current = request("GET", f"/tenants/{tenant['id']}", as_json=as_json).json()
    return {**current, "connection_url": tenant.get("connection_url")}


@app.command()
def create(
    tenant_id: IdArg,
    name: Annotated[str | None, typer.Option(help="Display name [default: the id].", show_default=False)] = None,
    seed: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE given to seed files; repeatable.", metavar="KEY=VALUE", show_default=False),
    ] = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(
            help="replay: run every file; clone: copy a checked template [default: the service's].", show_default=False
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Database server to create it on [default: the least loaded with room].", show_default=False),
    ] = None,
    background: Annotated[
        bool, typer.Option("--async", help="Answer at once (202) and build the database in the background.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="With --async: wait until it is built; exit 1 if it failed.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant (idempotent: the same command again succeeds)."""
    body: dict[str, Any] = {"id": checked(tenant_id), "seed": _seed(seed)}
    if name is not None:
        body["name"] = name
    if strategy is not None:
        body["strategy"] = strategy.value
    if server is not None:
        body["server"] = server
    headers = {"Prefer": "respond-async"} if background else {}
    data = request("POST", "/tenants", json=body, headers=headers, as_json=as_json).json()
    if background and wait:
        data = _until_built(data, as_json)
    emit(data, as_json, _tenant_human(data))
    if data["state"] == "failed":
        raise typer.Exit(1)


@app.command()
def show(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show a tenant's lifecycle state, server, level and last error (from the catalog)."""
    data = request("GET", f"/tenants/{checked(tenant_id)}", as_json=as_json).json()
    emit(data, as_json, _tenant_human(data))


def _event_row(e: dict[str, Any]) -> list[str]:
    error = e["error"] or {}
    outcome = e["state"] + (f": {error.get('code')}: {error.get('message')}" if error else "")
    return [str(e["id"]), e["started_at"], e["kind"], e["actor"], outcome]


@app.command()
def events(
    tenant_id: IdArg,
    limit: Annotated[int, typer.Option(help="Newest operations to show.", min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Show a tenant's audit trail: every operation run on it, newest first, who ran it and its outcome."""
    items = request("GET", f"/tenants/{checked(tenant_id)}/events", params={"limit": limit}, as_json=as_json).json()[
        "items"
    ]
    emit(items, as_json, table([_event_row(e) for e in items], ["ID", "STARTED", "KIND", "ACTOR", "OUTCOME"]))


@app.command()
def status(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show a tenant's migration level."""
    data = request("GET", f"/tenants/{checked(tenant_id)}/schema", as_json=as_json).json()
    emit(data, as_json, _schema_human(data))


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _catalog_status(t: dict[str, Any]) -> str:
    """What the catalog knows (as GET /fleet counts it); ``--status`` judges each tenant live instead."""
    if t["state"] == "failed" or t["error"]:
        return "failed"
    if t["state"] != "ready" or t["version"] is None or t["latest_version"] is None:
        return "-"
    return "behind" if t["version"] < t["latest_version"] else "up_to_date"


@app.command("list")
def list_(
    state: Annotated[
        State | None, typer.Option(help="Only tenants in this lifecycle state.", show_default=False)
    ] = None,
    status: Annotated[
        Status | None,
        typer.Option(
            help="Only tenants whose schema has this status, judged live (one read per tenant).", show_default=False
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List every tenant: state, status (as recorded; live with --status), version of the latest, server."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {
            "state": None if state is None else state.value,
            "status": None if status is None else status.value,
            "cursor": cursor,
            "limit": 500,
        }
        params = {k: v for k, v in query.items() if v is not None}
        page = request("GET", "/tenants", params=params, as_json=as_json).json()
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    rows = [
        [
            t["id"],
            t["state"],
            status.value if status is not None else _catalog_status(t),
            f"{_dash(t['version'])}/{_dash(t['latest_version'])}",
            t["server"],
            t["database"],
        ]
        for t in items
    ]
    emit(items, as_json, table(rows, ["ID", "STATE", "STATUS", "VERSION", "SERVER", "DATABASE"]))


@app.command()
def migrate(
    tenant_id: IdArg,
    allow_out_of_order: Annotated[bool, typer.Option(help="Apply pending files older than the newest.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply a tenant's pending migrations."""
    data = request(
        "POST",
        f"/tenants/{checked(tenant_id)}/migrate",
        json={"allow_out_of_order": allow_out_of_order},
        as_json=as_json,
    ).json()
    emit(data, as_json, _schema_human(data))


@app.command()
def repair(
    tenant_id: IdArg,
    accept: Annotated[
        list[str],
        typer.Option(
            help="VERSION=SHA256: accept an edited, applied file as it now reads (sha256 from GET /migrations); "
            "repeatable.",
            show_default=False,
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Accept edited, applied files on one tenant; nothing is re-run (the history keeps what ran)."""
    items = []
    for item in accept:
        version, sep, digest = item.partition("=")
        if not sep or not version.isdigit():
            fail(f"--accept expects VERSION=SHA256, got {item!r}", 2)
        items.append({"version": int(version), "sha256": digest})
    data = request("POST", f"/tenants/{checked(tenant_id)}/repair", json={"accept": items}, as_json=as_json).json()
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
    data = request("POST", f"/tenants/{checked(tenant_id)}/credentials/rotate", as_json=as_json).json()
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
    data = request("GET", f"/tenants/{checked(tenant_id)}/drift", as_json=as_json).json()
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
    data = request("POST", f"/tenants/{checked(tenant_id)}/adopt", json=body, as_json=as_json).json()
    emit(data, as_json, _schema_human(data))
