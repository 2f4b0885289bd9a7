"""The ``tenantctl`` typer application, which every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tenantctl",
    help="Create, migrate and inspect per-tenant PostgreSQL databases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
