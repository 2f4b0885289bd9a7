"""A refused start, said once: one plain-text paragraph on stderr (what is wrong, per file, what to do), no traceback.

uvicorn runs the app's lifespan and, when it fails, logs the traceback Starlette formats (inside a JSON line when
the logs are JSON) and exits 3. :class:`Refusals` sits between the two: it keeps the exception, hands uvicorn an
empty failure message, and ``tenantctl serve`` prints :func:`paragraph` of it after uvicorn has given up. The
traceback is still logged at debug level, for a failure nobody foresaw.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import ValidationError

from service.config import Settings
from service.errors import DatabaseUnavailable, MigrationSetInvalid, ServiceError
from service.store.processes import EmbeddedError

log = logging.getLogger("service.startup")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


class Refusals:
    """ASGI wrapper: a lifespan startup that fails is reported by ``tenantctl serve``, not by uvicorn."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: BaseException | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                log.debug("start-up failed: %s", message.get("message", ""))
                message = {"type": message["type"], "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, quiet)
        except Exception as exc:  # the app already told uvicorn the startup failed; the paragraph says why
            self.error = exc


def paragraph(error: BaseException, settings: Settings) -> str:
    """What went wrong and what to do, for a person reading a terminal or a container log."""
    if isinstance(error, MigrationSetInvalid):
        problems = "\n".join(f"  - {p}" for p in error.problems)
        return (
            f"The service did not start: the migrations folder {settings.migrations_dir} is not valid.\n"
            f"{problems}\n"
            "Fix the files listed (`tenantctl check` shows the same list), or point TENANTS_MIGRATIONS_DIR at the "
            "right folder, then start again."
        )
    if isinstance(error, EmbeddedError):
        return (
            f"The service did not start: {_sentence(str(error))}\n"
            "No database URL is set (TENANTS_DATABASE_URL), so the service runs its own PostgreSQL in "
            f"{settings.data_dir}."
        )
    if isinstance(error, DatabaseUnavailable):
        return (
            f"The service did not start: {_sentence(error.message)}\n"
            "Check that the PostgreSQL server in TENANTS_DATABASE_URL (or TENANTS_SERVERS) is running and reachable "
            "from here, then start again."
        )
    if isinstance(error, ServiceError):
        return f"The service did not start: {_sentence(error.message)}"
    return (
        f"The service did not start: {_sentence(f'{type(error).__name__}: {error}')}\n"
        "Set TENANTS_LOG_LEVEL=debug to see where it happened."
    )


def _sentence(text: str) -> str:
    text = text.strip()
    return text if "\n" in text or text.endswith((".", "!", "?")) else text + "."


def settings_paragraph(exc: ValidationError) -> str:
    """One line per setting, without its value (it may hold a password)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"] and not message.startswith("TENANTS_"):
            message = f"TENANTS_{str(error['loc'][0]).upper()}: {message}"
        lines.append(f"  - {message}")
    return (
        "The service did not start: its settings are not valid.\n"
        + "\n".join(lines)
        + "\nFix these environment variables (the README's settings table lists every one), then start again."
    )


def say(text: str) -> None:
    """The paragraph as plain text on stderr, whatever the log format."""
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()
