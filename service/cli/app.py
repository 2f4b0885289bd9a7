"""The ``tenantctl`` typer application, which every command module registers on, and its global options."""

from __future__ import annotations

from typing import Annotated

import typer

from service import __version__
from service.cli import output

app = typer.Typer(
    name="tenantctl",
    help="Create, migrate and inspect per-tenant PostgreSQL databases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[default: …]" and show "<bool>" for flags.
    rich_markup_mode=None,
    epilog="Exit codes: 0 success, 1 the operation failed (the reason on stderr), 2 bad usage.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tenantctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    url: Annotated[
        str | None,
        typer.Option(
            help="The service's address [env: TENANTS_URL; default: http://127.0.0.1:8000].", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token sent to the service [env: TENANTS_TOKEN; default: none].", show_default=False),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Create, migrate and inspect per-tenant PostgreSQL databases."""
    # Options are read by the environment-aware settings in `output.request` when not given here (config.py is
    # the one reader of the environment).
    output.target.url = url
    output.target.token = token
    output.target.json = False
