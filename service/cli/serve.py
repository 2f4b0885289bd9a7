"""``tenantctl serve`` and ``openapi``: the service itself, in this process."""

from __future__ import annotations

import ipaddress
import logging
import logging.config
import socket
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from service.cli import startup
from service.cli.app import app
from service.cli.output import fail
from service.config import Settings


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
    """Run the HTTP service (embedded PostgreSQL unless TENANTS_DATABASE_URL is set).

    A start that cannot succeed (bad settings, a broken migrations folder, a port in use, no database) prints one
    paragraph on stderr saying what is wrong and what to do, and exits non-zero.
    """
    import uvicorn

    from service.api.app import create_app
    from service.logs import config as log_config

    try:
        settings = Settings()
    except ValidationError as exc:
        startup.say(startup.settings_paragraph(exc))
        raise typer.Exit(2) from None
    if not settings.auth_enabled and not _is_loopback(host):
        fail(f"refusing to serve on {host} without TENANTS_ADMIN_TOKEN or TENANTS_READ_TOKEN", 2)
    listener = _listen(host, port)
    queue_process = settings.queue_builder == "process" and settings.queue_workers > 0
    service = create_app(settings, queue_process=queue_process)
    # Every request's query check reads the OpenAPI document (api/limits.known_query): built now, not by the first
    # request, which held the event loop 0.3-0.8 s doing it on this repository's bench machine (bench/RESULTS.md).
    service.openapi()
    app = startup.Refusals(service)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    logging.getLogger("service").info("listening on http://%s:%d", host, port)
    try:
        server.run(sockets=[listener])
    except SystemExit:
        if app.error is None:
            raise
    finally:
        listener.close()
    if app.error is not None:
        startup.say(startup.paragraph(app.error, settings))
        raise typer.Exit(1)


@app.command("build-queue", hidden=True)
def build_queue() -> None:
    """The queue's builder process that `serve` starts and supervises (reads the catalog's URL on stdin)."""
    import asyncio

    from service.logs import config as log_config
    from service.tenants import builders

    settings = Settings()
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    asyncio.run(builders.serve(settings))


def _listen(host: str, port: int) -> socket.socket:
    """Bind the HTTP port before anything starts, so a port in use is said at once and nothing is left half-made."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        startup.say(
            f"The service did not start: it cannot listen on {host}:{port} ({exc.strerror or exc}).\n"
            "Another program may be using that port: stop it, or choose another with --port."
        )
        raise typer.Exit(1) from None
    return listener


@app.command()
def openapi() -> None:
    """Print the service's OpenAPI document (YAML), as committed in openapi.yaml."""
    from service.api.spec import render

    sys.stdout.write(render())
