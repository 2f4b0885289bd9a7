"""Limits on what a request may carry: the body's size, and only the query parameters an operation declares.

A declared ``Content-Length`` over the limit is answered at once; a body without one (chunked) is counted as it
arrives and refused as soon as it passes the limit, so a hostile client can never make the service buffer more
than the limit. Either way the answer is ``413`` problem+json with code ``payload_too_large``.

An unknown query parameter is ``422 invalid_request``, as an unknown body field is: ``?confrm=acme`` or ``?force=1``
must not be silently ignored. Operations that take no parameters at all (health checks) ignore the query string,
so a load balancer's cache buster does no harm.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import problems

MAX_BODY: Final = 64 * 1024
_DETAIL: Final = f"the request body is larger than {MAX_BODY // 1024} KiB"


class BodyLimit:
    """ASGI middleware refusing request bodies larger than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await problems.problem(413, "payload_too_large", _DETAIL)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's body read: FastAPI passes HTTPException through to the handlers.
                    raise HTTPException(413, _DETAIL)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # Not a number: the server (h11, httptools) refuses it before we get here; count the body instead.
            return int(text) if text.isdigit() else None
    return None


async def known_query(request: Request) -> None:
    """Dependency: raise a validation error (422) for query parameters the operation does not declare."""
    path = getattr(request.scope.get("route"), "path", None)
    operation = request.app.openapi().get("paths", {}).get(path, {}).get(request.method.lower())
    if not operation or not (operation.get("parameters") or "requestBody" in operation):
        return
    declared = {p["name"] for p in operation.get("parameters", ()) if p.get("in") == "query"}
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": "unknown query parameter", "type": "extra_forbidden"} for name in unknown]
        )


_BODY_ANSWERS: Final = {
    # FastAPI's own answer when the JSON parser gives up (e.g. arrays nested thousands deep).
    "400": {"description": "Bad Request: the body is not valid JSON"},
    "413": {"description": "Content Too Large"},
}


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the answers every operation that takes a request body may give before its handler runs."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                answers = {**operation.get("responses", {}), **_BODY_ANSWERS}
                operation["responses"] = dict(sorted(answers.items()))
    return openapi
