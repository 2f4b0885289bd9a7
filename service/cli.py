"""``tenantctl``: run the service, and drive it from setup scripts and CI over its HTTP API.

Exit codes: 0 success, 1 the operation failed (the service said no, or could not be reached), 2 bad usage.
Errors are one line on stderr; ``--json`` prints the service's JSON answer on stdout for tools.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError

from service.config import ClientSettings, Settings
from service.errors import ServiceError
from service.identifiers import is_tenant_id

app = typer.Typer(
    name="tenantctl",
    help="Create, migrate and inspect per-tenant PostgreSQL databases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the service's JSON answer.")]
IdArg = Annotated[str, typer.Argument(help="Tenant id.", show_default=False)]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"tenantctl: {message}", err=True)
    raise typer.Exit(code)


def _settings_problems(exc: ValidationError) -> str:
    """One line per problem, without the input (it may hold a password)."""
    found = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"] and not message.startswith("TENANTS_"):
            message = f"TENANTS_{str(error['loc'][0]).upper()}: {message}"
        found.append(message)
    return "; ".join(found)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked(tenant_id: str) -> str:
    if not is_tenant_id(tenant_id):
        _fail(f"invalid tenant id {tenant_id!r}: 1-40 characters of a-z, 0-9 and _", 2)
    return tenant_id


def _request(method: str, path: str, **kwargs: Any) -> httpx.Response:
    settings = ClientSettings()
    headers = {}
    if settings.token is not None:
        headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    try:
        with httpx.Client(base_url=settings.url, timeout=settings.timeout, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the service at {settings.url}: {exc}")
    if response.status_code >= 400:
        _fail(_problem_line(response))
    return response


def _problem_line(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    code, detail = body.get("code", "error"), body.get("detail", "")
    where = ", ".join(f"{k}={body[k]}" for k in ("file", "statement", "line", "sqlstate") if body.get(k) is not None)
    return f"{code}: {detail}" + (f" ({where})" if where else "")


def _emit(data: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else human)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


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
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP service (embedded PostgreSQL unless TENANTS_DATABASE_URL is set)."""
    import uvicorn

    from service.api.app import create_app

    try:
        settings = Settings()
    except ValidationError as exc:
        _fail(f"invalid settings: {_settings_problems(exc)}", 2)
    if not settings.auth_enabled and not _is_loopback(host):
        _fail(f"refusing to serve on {host} without TENANTS_ADMIN_TOKEN or TENANTS_READ_TOKEN", 2)
    from service.logs import config as log_config

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
    )


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
            _fail(f"--seed expects KEY=VALUE, got {item!r}", 2)
        values[key] = value
    body: dict[str, Any] = {"id": _checked(tenant_id), "seed": values}
    if name is not None:
        body["name"] = name
    if strategy is not None:
        body["strategy"] = strategy
    if server is not None:
        body["server"] = server
    data = _request("POST", "/tenants", json=body).json()
    _emit(data, as_json, _tenant_human(data))


@app.command()
def status(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show a tenant's migration level."""
    data = _request("GET", f"/tenants/{_checked(tenant_id)}/schema").json()
    _emit(data, as_json, _schema_human(data))


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
        page = _request("GET", "/tenants", params=params).json()
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    rows = [[t["id"], t["state"], str(t["version"]), t["database"]] for t in items]
    _emit(items, as_json, _table(rows, ["ID", "STATE", "VERSION", "DATABASE"]))


@app.command()
def migrate(
    tenant_id: IdArg,
    allow_out_of_order: Annotated[bool, typer.Option(help="Apply pending files older than the newest.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply a tenant's pending migrations."""
    data = _request(
        "POST", f"/tenants/{_checked(tenant_id)}/migrate", json={"allow_out_of_order": allow_out_of_order}
    ).json()
    _emit(data, as_json, _schema_human(data))


@app.command()
def delete(
    tenant_id: IdArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the database is dropped.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Drop a tenant's database and remove the tenant."""
    if not yes:
        _fail(f"refusing to delete {tenant_id!r} without --yes", 2)
    _request("DELETE", f"/tenants/{_checked(tenant_id)}", params={"confirm": tenant_id})
    _emit({"deleted": tenant_id}, as_json, f"deleted {tenant_id}")


@app.command("rotate-credentials")
def rotate_credentials(tenant_id: IdArg, as_json: JsonOpt = False) -> None:
    """Give a tenant's login role a new password and print its connection URL (the old password stops working)."""
    data = _request("POST", f"/tenants/{_checked(tenant_id)}/credentials/rotate").json()
    _emit(data, as_json, data["connection_url"])


@app.command()
def check(
    directory: Annotated[
        Path | None, typer.Argument(help="Migrations folder [default: TENANTS_MIGRATIONS_DIR or ./migrations].")
    ] = None,
    write_sum: Annotated[bool, typer.Option("--write-sum", help="Write tenants.sum pinning every file.")] = False,
    lint: Annotated[
        bool, typer.Option("--lint", help="Also flag heavy-lock statements in files not in tenants.sum (squawk).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a migrations folder before it ships; no server needed (exit 0 clean, 1 problems, 2 usage)."""
    from service import checks

    folder = directory if directory is not None else Settings().migrations_dir
    if not folder.is_dir():
        _fail(f"{folder}: migrations folder not found", 2)
    try:
        report = checks.write_sum(folder, lint_new=lint) if write_sum else checks.check(folder, lint_new=lint)
    except ServiceError as exc:
        _fail(exc.message, 2)
    _emit(checks.as_dict(report), as_json, checks.human(report))
    raise typer.Exit(report.exit_code(lint=lint))


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
    data = _request("GET", f"/tenants/{_checked(tenant_id)}/drift").json()
    _emit(data, as_json, _drift_human(data))
    if not data["clean"]:
        raise typer.Exit(1)


@app.command()
def databases(
    server: Annotated[str | None, typer.Option(help="Only this database server's databases.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List every database on the servers: managed, unmanaged (adoptable), other, internal."""
    items = _request("GET", "/databases", params={} if server is None else {"server": server}).json()["items"]
    rows = [
        [
            d["server"],
            d["name"],
            d["kind"],
            d["tenant"] or "-",
            d["history"],
            "-" if d["version"] is None else str(d["version"]),
            "inferred" if d["inferred"] else "",
        ]
        for d in items
    ]
    _emit(items, as_json, _table(rows, ["SERVER", "DATABASE", "KIND", "TENANT", "HISTORY", "VERSION", ""]))


@app.command()
def servers(as_json: JsonOpt = False) -> None:
    """List the database servers: tenants, capacity, health; exit 1 if any is unhealthy."""
    items = _request("GET", "/servers").json()["items"]
    rows = [
        [
            s["name"],
            str(s["tenants"]),
            "-" if s["capacity"] is None else str(s["capacity"]),
            "ok" if s["healthy"] else f"down: {s['error']}",
            s["version"] or "-",
        ]
        for s in items
    ]
    _emit(items, as_json, _table(rows, ["SERVER", "TENANTS", "CAPACITY", "HEALTH", "VERSION"]))
    if not all(s["healthy"] for s in items):
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
    data = _request("POST", f"/tenants/{_checked(tenant_id)}/adopt", json=body).json()
    _emit(data, as_json, _schema_human(data))


RolloutIdArg = Annotated[int, typer.Argument(help="Rollout id.", min=1, show_default=False)]
# Seconds between two looks at a rollout's progress (rollout --wait).
_ROLLOUT_POLL = 0.5


def _rollout_human(r: dict[str, Any], *, every_tenant: bool) -> str:
    lines = [
        f"rollout {r['id']}  {r['state']}  to version {r['to_version']}  {r['total']} tenant(s): {r['done']} done, "
        f"{r['failed']} failed, {r['skipped']} skipped, {r['running']} running, {r['pending']} pending"
    ]
    if every_tenant and r["tenants"]:
        rows = [
            [
                t["id"] + (" (canary)" if t["canary"] else ""),
                t["state"],
                "-" if t["from_version"] is None else str(t["from_version"]),
                "-" if t["duration_ms"] is None else f"{t['duration_ms']:.0f}",
                "" if t["error"] is None else f"{t['error']['code']}: {t['error']['message']}",
            ]
            for t in r["tenants"]
        ]
        lines.append(_table(rows, ["TENANT", "STATE", "FROM", "MS", "ERROR"]))
    else:
        lines += [
            f"failed: {t['id']}: {t['error']['code']}: {t['error']['message']}"
            for t in r["tenants"]
            if t["state"] == "failed" and t["error"] is not None
        ]
    return "\n".join(lines)


def _follow(rollout: dict[str, Any]) -> dict[str, Any]:
    """Poll until the rollout ends, with a progress bar on stderr; return its final state."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(f"rollout {rollout['id']} to {rollout['to_version']}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=rollout["total"])
        while True:
            ended = rollout["done"] + rollout["failed"] + rollout["skipped"]
            bar.update(task, completed=ended, description=f"{rollout['failed']} failed, {rollout['running']} running")
            if rollout["state"] != "running":
                return rollout
            time.sleep(_ROLLOUT_POLL)
            rollout = _request("GET", f"/rollouts/{rollout['id']}").json()


@app.command()
def rollout(
    to: Annotated[int | None, typer.Option("--to", help="Target version [default: the latest].", min=0)] = None,
    concurrency: Annotated[int, typer.Option(help="Tenants at once after the canaries.", min=1, max=64)] = 8,
    canary: Annotated[int, typer.Option(help="Tenants migrated first, one at a time; any failure stops.", min=0)] = 5,
    max_failures: Annotated[int, typer.Option(help="Failures tolerated after the canaries.", min=0)] = 1,
    tenant: Annotated[
        list[str] | None, typer.Option(help="Only this tenant; repeatable, in run order (canaries first).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to its end; exit 1 unless it succeeds.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Migrate every tenant below a version (default the latest) to it: canaries first, then in parallel."""
    body: dict[str, Any] = {"concurrency": concurrency, "canary": canary, "max_failures": max_failures}
    if to is not None:
        body["to_version"] = to
    if tenant:
        body["tenants"] = [_checked(t) for t in tenant]
    data = _request("POST", "/rollouts", json=body).json()
    if wait:
        data = _follow(data)
    _emit(data, as_json, _rollout_human(data, every_tenant=False))
    if wait and data["state"] != "succeeded":
        raise typer.Exit(1)


@app.command("rollout-status")
def rollout_status(rollout_id: RolloutIdArg, as_json: JsonOpt = False) -> None:
    """Show a rollout and each of its tenants; exit 1 when it failed or was cancelled."""
    data = _request("GET", f"/rollouts/{rollout_id}").json()
    _emit(data, as_json, _rollout_human(data, every_tenant=True))
    if data["state"] in ("failed", "cancelled"):
        raise typer.Exit(1)


@app.command("rollout-cancel")
def rollout_cancel(rollout_id: RolloutIdArg, as_json: JsonOpt = False) -> None:
    """Start no more tenants in a rollout (those running finish)."""
    data = _request("POST", f"/rollouts/{rollout_id}/cancel").json()
    _emit(data, as_json, _rollout_human(data, every_tenant=False))


@app.command()
def openapi() -> None:
    """Print the service's OpenAPI document (YAML), as committed in openapi.yaml."""
    from service.api.spec import render

    sys.stdout.write(render())


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="tenantctl")
