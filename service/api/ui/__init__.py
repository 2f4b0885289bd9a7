"""The fleet console in the browser (``/ui``): server-rendered pages (Jinja2) over the same domain calls as the JSON
routes, and one small script that keeps running rollouts live and makes actions through the JSON API.

Part of ``api``: may import what ``api`` imports. Static files are served by the service itself (no CDN, no build).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.api.ui import pages, session, view


def install(app: FastAPI) -> None:
    """Add the console's pages, its static files and the redirect to its token form."""
    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=view.HERE / "static"), name="ui-static")
    app.add_exception_handler(session.LoginRequired, pages.login_required)
