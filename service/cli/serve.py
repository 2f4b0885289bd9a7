"""``tenantctl serve`` and ``openapi``: the service itself, in this process."""

from __future__ import annotations

import ipaddress
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from service.cli.app import app
from service.cli.output import fail
from service.config import Settings


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
        fail(f"invalid settings: {_settings_problems(exc)}", 2)
    if not settings.auth_enabled and not _is_loopback(host):
        fail(f"refusing to serve on {host} without TENANTS_ADMIN_TOKEN or TENANTS_READ_TOKEN", 2)
    from service.logs import config as log_config

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
    )


@app.command()
def openapi() -> None:
    """Print the service's OpenAPI document (YAML), as committed in openapi.yaml."""
    from service.api.spec import render

    sys.stdout.write(render())
