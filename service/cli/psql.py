"""``tenantctl psql``: an operator's shell on the service's PostgreSQL, as its admin.

The embedded cluster asks for a password on every connection; its superuser's is in the data directory, readable by
the service's OS user only, so this command must run as that user (the one ``tenantctl serve`` runs as). The
``psql`` shipped with the embedded server binaries is used, else the one on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError

from service.cli.app import app
from service.cli.output import checked, fail
from service.config import Settings
from service.store import cluster_files
from service.store.db import with_database
from service.store.embedded import bundled_bin_dir
from service.store.processes import EmbeddedError


def _admin_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    try:
        return cluster_files.url_of(settings.data_dir)
    except EmbeddedError as exc:
        fail(str(exc))


def _psql() -> str:
    try:
        bundled = bundled_bin_dir() / "psql"
    except EmbeddedError:
        bundled = None
    if bundled is not None and bundled.is_file():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        fail("psql not found: install the PostgreSQL client, or use the URL `tenantctl psql --url` prints")
    return found


@app.command()
def psql(
    tenant_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="Open this tenant's database (default: postgres).", show_default=False),
    ] = None,
    url: Annotated[
        bool, typer.Option("--url", metavar="", help="Print the admin URL (with its password) instead.")
    ] = False,
    command: Annotated[
        str | None, typer.Option("--command", "-c", metavar="SQL", help="Run this SQL and exit.", show_default=False)
    ] = None,
) -> None:
    """A psql shell as the admin of the service's PostgreSQL (the embedded superuser unless TENANTS_DATABASE_URL
    is set), on the same machine and as the same OS user as the service. Reads TENANTS_DATA_DIR, TENANTS_DB_PREFIX."""
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid settings: {exc.errors()[0]['msg']}", 2)
    dsn = _admin_url(settings)
    if tenant_id is not None:
        dsn = with_database(dsn, settings.db_prefix + checked(tenant_id))
    if url:
        typer.echo(dsn)
        return
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password:  # through the environment, not argv: other users can read a process's arguments
        env["PGPASSWORD"] = parts.password
        userinfo, host = parts.netloc.rsplit("@", 1)
        dsn = urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}@{host}"))
    binary = _psql()
    args = [binary, dsn, *(["-c", command] if command is not None else [])]
    os.execve(binary, args, env)  # noqa: S606 - replace this process with psql: the operator's shell
