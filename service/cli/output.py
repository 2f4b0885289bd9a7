"""What every client command shares: talking to the service, and printing its answer or its problem."""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import httpx
import typer

from service.config import ClientSettings
from service.identifiers import is_tenant_id

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the service's JSON answer.")]
IdArg = Annotated[str, typer.Argument(help="Tenant id.", show_default=False)]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"tenantctl: {message}", err=True)
    raise typer.Exit(code)


def checked(tenant_id: str) -> str:
    if not is_tenant_id(tenant_id):
        fail(f"invalid tenant id {tenant_id!r}: 1-40 characters of a-z, 0-9 and _", 2)
    return tenant_id


def request(method: str, path: str, **kwargs: Any) -> httpx.Response:
    settings = ClientSettings()
    headers = {}
    if settings.token is not None:
        headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    try:
        with httpx.Client(base_url=settings.url, timeout=settings.timeout, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service at {settings.url}: {exc}")
    if response.status_code >= 400:
        fail(problem_line(response))
    return response


def problem_line(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    code, detail = body.get("code", "error"), body.get("detail", "")
    where = ", ".join(f"{k}={body[k]}" for k in ("file", "statement", "line", "sqlstate") if body.get(k) is not None)
    return f"{code}: {detail}" + (f" ({where})" if where else "")


def emit(data: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else human)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
