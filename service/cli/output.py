"""What every client command shares: talking to the service, and printing its answer or its problem."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import httpx
import typer

from service.config import ClientSettings
from service.identifiers import is_tenant_id


def _json_mode(value: bool) -> bool:
    """Every command's ``--json`` also tells :func:`request` to put a problem body on stdout."""
    target.json = value
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the service's JSON answer on stdout (its problem body on an error).", callback=_json_mode
    ),
]
IdArg = Annotated[str, typer.Argument(help="Tenant id.", show_default=False)]

# The members every problem has; the others are the error's details, printed one per line.
_STANDARD = frozenset({"type", "title", "status", "detail", "code", "errors"})


@dataclass(slots=True)
class Target:
    """``--url`` and ``--token`` given before the command; ``None`` falls back to TENANTS_URL / TENANTS_TOKEN."""

    url: str | None = None
    token: str | None = None
    json: bool = False


target = Target()


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"tenantctl: {message}", err=True)
    raise typer.Exit(code)


def checked(tenant_id: str) -> str:
    if not is_tenant_id(tenant_id):
        fail(f"invalid tenant id {tenant_id!r}: 1-40 characters of a-z, 0-9 and _", 2)
    return tenant_id


def request(method: str, path: str, *, as_json: bool = False, **kwargs: Any) -> httpx.Response:
    """The service's answer; on an error status, print its problem (the body on stdout with ``as_json``), exit 1."""
    settings = ClientSettings()
    url = target.url or settings.url
    token = target.token or (None if settings.token is None else settings.token.get_secret_value())
    headers = dict(kwargs.pop("headers", None) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(base_url=url, timeout=settings.timeout, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service at {url}: {exc}")
    if response.status_code >= 400:
        if as_json or target.json:
            typer.echo(response.text)
        fail("\n".join(problem_lines(response)))
    return response


def problem_lines(response: httpx.Response) -> list[str]:
    """``code: detail`` first, then each field error as ``loc: msg``, then each extra member as ``name: value``."""
    try:
        body = response.json()
    except ValueError:
        return [f"HTTP {response.status_code}: {response.text[:200]}"]
    if not isinstance(body, dict):
        return [f"HTTP {response.status_code}: {response.text[:200]}"]
    lines = [f"{body.get('code', 'error')}: {body.get('detail', '')} (HTTP {response.status_code})"]
    for error in body.get("errors") or ():
        if isinstance(error, dict):
            loc = ".".join(str(part) for part in error.get("loc") or ())
            lines.append(f"  {loc or '(request)'}: {error.get('msg', '')}")
    for key, value in body.items():
        if key not in _STANDARD:
            lines.append(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}")
    return lines


def emit(data: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else human)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
