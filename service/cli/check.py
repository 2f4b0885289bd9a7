"""``tenantctl check``: a migrations folder before it ships, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.app import app
from service.cli.output import emit, fail
from service.config import Settings
from service.errors import ServiceError


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
    from service.history import checks

    folder = directory if directory is not None else Settings().migrations_dir
    if not folder.is_dir():
        fail(f"{folder}: migrations folder not found", 2)
    try:
        report = checks.write_sum(folder, lint_new=lint) if write_sum else checks.check(folder, lint_new=lint)
    except ServiceError as exc:
        fail(exc.message, 2)
    emit(checks.as_dict(report), as_json, checks.human(report))
    raise typer.Exit(report.exit_code(lint=lint))
