"""``tenantctl``: run the service, and drive it from setup scripts and CI over its HTTP API.

Exit codes: 0 success, 1 the operation failed (the service said no, or could not be reached), 2 bad usage.
An error is a ``code: detail`` line on stderr, then one indented line per field error and extra member;
``--json`` prints the service's JSON answer (or its problem body) on stdout for tools.

One module per command group, each registering on :data:`service.cli.app.app` (which holds the global ``--url``,
``--token``, ``--version``); ``output`` holds what they share (the HTTP client, problem lines, tables),
``choices`` the fixed-value options. Commands parse, make one call and print: no business logic here. May
import ``config``, ``errors``, ``identifiers``, and (``serve``, ``check``) the packages that run in-process.
"""

from __future__ import annotations

from service.cli import check, fleet, lifecycle, psql, serve, tenants
from service.cli.app import app

__all__ = ["app", "check", "fleet", "lifecycle", "main", "psql", "serve", "tenants"]


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="tenantctl")
