"""``tenantctl check`` and ``new``: a migrations folder before it ships, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.app import app
from service.cli.output import emit, fail
from service.config import Settings
from service.errors import ServiceError

FolderArg = Annotated[
    Path | None,
    typer.Argument(help="Migrations folder [default: TENANTS_MIGRATIONS_DIR, else ./migrations].", show_default=False),
]
FolderOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Migrations folder [default: TENANTS_MIGRATIONS_DIR, else ./migrations].", show_default=False
    ),
]


def _folder(directory: Path | None) -> Path:
    folder = directory if directory is not None else Settings().migrations_dir
    if not folder.is_dir():
        fail(f"{folder}: migrations folder not found", 2)
    return folder


@app.command()
def check(
    directory: FolderArg = None,
    write_sum: Annotated[bool, typer.Option("--write-sum", help="Write tenants.sum pinning every file.")] = False,
    fix_journal: Annotated[
        bool,
        typer.Option("--fix-journal", help="First add journal entries for files written by hand after the last one."),
    ] = False,
    lint: Annotated[
        bool, typer.Option("--lint", help="Also flag heavy-lock statements in files not in tenants.sum (squawk).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a migrations folder before it ships; no server needed (exit 0 clean, 1 problems, 2 usage)."""
    from service.history import checks, scaffold

    folder = _folder(directory)
    try:
        if fix_journal:
            for tag in scaffold.fix_journal(folder):
                typer.echo(f"added {tag} to the journal", err=True)
        report = checks.write_sum(folder, lint_new=lint) if write_sum else checks.check(folder, lint_new=lint)
    except ServiceError as exc:
        fail(exc.message, 2)
    emit(checks.as_dict(report), as_json, checks.human(report))
    raise typer.Exit(report.exit_code(lint=lint))


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="What the migration does, e.g. add_client_vat.", show_default=False)],
    sql: Annotated[
        str | None,
        typer.Option(help="The migration's SQL; '-' reads it from standard input [default: a placeholder to edit]."),
    ] = None,
    no_transaction: Annotated[
        bool, typer.Option("--no-transaction", help="Run it alone, outside a transaction (CREATE INDEX CONCURRENTLY).")
    ] = False,
    directory: FolderOpt = None,
) -> None:
    """Write the next migration file (and its Drizzle journal entry and tenants.sum line), then check the folder."""
    import sys

    from service.history import checks, scaffold

    folder = _folder(directory)
    text = sys.stdin.read() if sql == "-" else sql
    try:
        created = scaffold.new(folder, name, sql=text, transactional=not no_transaction)
    except ServiceError as exc:
        fail(exc.message, 2)
    typer.echo(f"wrote {created.file}")
    if created.journal_entry is not None:
        typer.echo(f"journal entry idx {created.journal_entry['idx']}, when {created.journal_entry['when']}")
    if text is None or not text.strip():
        typer.echo("edit it, then run `tenantctl check --write-sum` (pins it in tenants.sum, if the folder has one)")
        return
    if created.pinned:
        typer.echo(f"pinned in {checks.SUM_FILE}")
    report = checks.check(folder)
    typer.echo(checks.human(report))
    raise typer.Exit(report.exit_code(lint=False))
