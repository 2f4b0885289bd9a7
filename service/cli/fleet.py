"""Commands over the fleet: databases on the servers, the servers, drift sweeps, rollouts."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.app import app
from service.cli.output import JsonOpt, checked, emit, request, table

rollouts = typer.Typer(help="List, show and cancel rollouts (`tenantctl rollout` starts one).", no_args_is_help=True)
app.add_typer(rollouts, name="rollouts")

RolloutIdArg = Annotated[int, typer.Argument(help="Rollout id.", min=1, show_default=False)]
# Seconds between two looks at a rollout's progress (rollout --wait).
_ROLLOUT_POLL = 0.5


@app.command()
def databases(
    server: Annotated[str | None, typer.Option(help="Only this database server's databases.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List every database on the servers: managed, unmanaged (adoptable), other, internal."""
    params = {} if server is None else {"server": server}
    items = request("GET", "/databases", params=params, as_json=as_json).json()["items"]
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
    emit(items, as_json, table(rows, ["SERVER", "DATABASE", "KIND", "TENANT", "HISTORY", "VERSION", ""]))


@app.command()
def servers(as_json: JsonOpt = False) -> None:
    """List the database servers: tenants, capacity, health; exit 1 if any is unhealthy."""
    items = request("GET", "/servers", as_json=as_json).json()["items"]
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
    emit(items, as_json, table(rows, ["SERVER", "TENANTS", "CAPACITY", "HEALTH", "VERSION"]))
    if not all(s["healthy"] for s in items):
        raise typer.Exit(1)


def _what(r: dict[str, Any]) -> str:
    """What a rollout does: to a version, or its moves (a drain of a server, a rebalance)."""
    if r.get("kind", "migrate") == "migrate":
        return f"to version {r['to_version']}"
    return f"{r['kind']} of {r['server']}" if r.get("server") else str(r["kind"])


def _rollout_human(r: dict[str, Any], *, every_tenant: bool) -> str:
    lines = [
        f"rollout {r['id']}  {r['state']}  {_what(r)}  {r['total']} tenant(s): {r['done']} done, "
        f"{r['failed']} failed, {r['skipped']} skipped, {r['running']} running, {r['pending']} pending"
    ]
    if every_tenant and r["tenants"]:
        moves = r.get("kind", "migrate") != "migrate"  # then each tenant's TO server is shown too
        rows = [
            [
                t["id"] + (" (canary)" if t["canary"] else ""),
                t["state"],
                "-" if t["from_version"] is None else str(t["from_version"]),
                *([t.get("to_server") or "-"] if moves else []),
                "-" if t["duration_ms"] is None else f"{t['duration_ms']:.0f}",
                "" if t["error"] is None else f"{t['error']['code']}: {t['error']['message']}",
            ]
            for t in r["tenants"]
        ]
        head = ["TENANT", "STATE", "FROM", *(["TO"] if moves else []), "MS", "ERROR"]
        lines.append(table(rows, head))
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
        TextColumn(f"rollout {rollout['id']} {_what(rollout)}"),
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
            rollout = request("GET", f"/rollouts/{rollout['id']}").json()


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
        body["tenants"] = [checked(t) for t in tenant]
    _start("/rollouts", body, wait=wait, as_json=as_json, every_tenant=False)


def _start(path: str, body: dict[str, Any], *, wait: bool, as_json: bool, every_tenant: bool) -> None:
    """Start a rollout (of any kind), follow it with ``wait``, print it; exit 1 when followed and not succeeded."""
    data = request("POST", path, json=body, as_json=as_json).json()
    if wait:
        data = _follow(data)
    emit(data, as_json, _rollout_human(data, every_tenant=every_tenant))
    if wait and data["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def rebalance(
    concurrency: Annotated[int, typer.Option(help="Tenants moved at once.", min=1, max=32)] = 2,
    max_failures: Annotated[int, typer.Option(help="Failed moves tolerated.", min=0)] = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to its end; exit 1 unless it succeeds.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Even tenant counts across the servers not draining: moves from the fullest to the emptiest (a rollout)."""
    body = {"concurrency": concurrency, "max_failures": max_failures}
    _start("/rebalance", body, wait=wait, as_json=as_json, every_tenant=True)


@rollouts.command("show")
def rollout_show(rollout_id: RolloutIdArg, as_json: JsonOpt = False) -> None:
    """Show a rollout and each of its tenants; exit 1 when it failed or was cancelled."""
    data = request("GET", f"/rollouts/{rollout_id}", as_json=as_json).json()
    emit(data, as_json, _rollout_human(data, every_tenant=True))
    if data["state"] in ("failed", "cancelled"):
        raise typer.Exit(1)


@rollouts.command("cancel")
def rollout_cancel(rollout_id: RolloutIdArg, as_json: JsonOpt = False) -> None:
    """Start no more tenants in a rollout (those running finish)."""
    data = request("POST", f"/rollouts/{rollout_id}/cancel", as_json=as_json).json()
    emit(data, as_json, _rollout_human(data, every_tenant=False))


@rollouts.command("list")
def rollout_list(
    limit: Annotated[int, typer.Option(help="Newest rollouts to show.", min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List rollouts, newest first, with their counts."""
    items = request("GET", "/rollouts", params={"limit": limit}, as_json=as_json).json()["items"]
    rows = [
        [str(r["id"]), r["state"], str(r["to_version"]), str(r["total"]), str(r["done"]), str(r["failed"])]
        for r in items
    ]
    emit(items, as_json, table(rows, ["ID", "STATE", "TO", "TENANTS", "DONE", "FAILED"]))


# The names before `rollouts show|cancel`, kept for scripts written against them.
app.command("rollout-status", hidden=True)(rollout_show)
app.command("rollout-cancel", hidden=True)(rollout_cancel)


@app.command("drift-sweep")
def drift_sweep(as_json: JsonOpt = False) -> None:
    """Check every tenant for drift now; exit 1 when any has drifted."""
    data = request("POST", "/drift-checks", as_json=as_json).json()
    lines = [f"checked {data['checked']} tenant(s), {len(data['drifted'])} drifted"]
    lines += [f"drifted: {t}" for t in data["drifted"]]
    lines += [f"skipped: {s.get('tenant')}: {s.get('code')}: {s.get('message')}" for s in data["skipped"]]
    emit(data, as_json, "\n".join(lines))
    if data["drifted"]:
        raise typer.Exit(1)
