"""Errors as RFC 9457 problem+json: the one table from error code to HTTP status, and the handlers.

No traceback ever reaches a client: unexpected exceptions are logged here and answered with ``internal_error``.
They are caught by :class:`Unexpected`, a middleware inside the request id's, not by an exception handler for
``Exception``: Starlette runs such a handler in its outermost middleware and then re-raises, so the server logged
every unhandled error a second time (uvicorn's "Exception in ASGI application"). Here it is logged once, with its
traceback and the request id, and nothing is re-raised.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.store import db

log = logging.getLogger(__name__)

MEDIA_TYPE: Final = "application/problem+json"

STATUS: Final[dict[type[errors.ServiceError], int]] = {
    errors.InvalidTenantId: 422,
    errors.InvalidRequest: 422,
    errors.UnknownServer: 422,
    errors.ConfirmationRequired: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.TenantNotFound: 404,
    errors.VersionNotFound: 404,
    errors.DatabaseNotFound: 404,
    errors.TenantExists: 409,
    errors.DatabaseExists: 409,
    errors.DatabaseNotAdoptable: 409,
    errors.AdoptionAmbiguous: 409,
    errors.RoleExists: 409,
    errors.RolePrivileged: 409,
    errors.ExpectedSchemaUnbuildable: 409,
    errors.ConnectionBudgetTooSmall: 503,
    errors.TenantBusy: 409,
    errors.TenantNotReady: 409,
    errors.HistoryMismatch: 409,
    errors.OutOfOrder: 409,
    errors.RepairRejected: 409,
    errors.RolloutNotFound: 404,
    errors.RolloutInProgress: 409,
    errors.RolloutFinished: 409,
    errors.ServerFull: 409,
    errors.ServerDraining: 409,
    errors.TenantDeleted: 409,
    errors.TenantNotDeleted: 409,
    errors.MoveRefused: 409,
    errors.BackupNotFound: 404,
    errors.VerificationFailed: 500,
    errors.ToolFailed: 500,
    errors.NoCapacity: 409,
    errors.MigrationFailed: 500,
    errors.MigrationSetInvalid: 500,
    errors.DatabaseUnavailable: 503,
}

_HTTP_CODES: Final = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_ID_LOCATIONS: Final = {("body", "id"), ("path", "tenant_id")}
# One answer for a body that is not JSON, however it is broken: pydantic's json_invalid (422 by default) and
# FastAPI's own 400 (a parser that gives up, e.g. on arrays nested thousands deep) alike.
_UNPARSEABLE: Final = "the request body is not valid JSON"


def status_of(exc: errors.ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def problem(status: int, code: str, detail: str, /, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:tenant-provisioner:error:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    # An error's details never replace the standard members.
    body.update({k: v for k, v in extra.items() if v is not None and k not in body})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ServiceError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    response = problem(status, exc.code, exc.message, **exc.details)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the input back: it may be hostile or huge.
    found = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in found):
        return problem(400, "bad_request", _UNPARSEABLE, errors=found)
    on_id = any(tuple(e["loc"][:2]) in _ID_LOCATIONS for e in found)
    if on_id:
        return problem(422, errors.InvalidTenantId.code, errors.InvalidTenantId().message, errors=found)
    return problem(422, errors.InvalidRequest.code, "the request is invalid", errors=found)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 400:
        detail = _UNPARSEABLE
    response = problem(exc.status_code, code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        response.headers["Allow"] = _allowed(request)
    return response


def _allowed(request: Request) -> str:
    """Every method of the path, from the OpenAPI document's path templates (FastAPI nests included routers, so
    walking ``app.routes`` finds none) and the app's own routes (docs). FastAPI answers no HEAD on its routes."""
    path = request.url.path
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template(template).fullmatch(path):
            methods.update(m.upper() for m in operations if m.upper() in _METHODS)
    for route in request.app.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _lost(request: Request, exc: Exception) -> JSONResponse:
    """A server or connection lost mid-operation, raised by a step that does not translate it itself: 503."""
    unavailable = db.as_unavailable(exc)
    assert unavailable is not None
    log.warning("%s %s: %s", request.method, request.url.path, unavailable.message)
    return problem(503, unavailable.code, unavailable.message)


_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _template(path: str) -> re.Pattern[str]:
    """``/tenants/{tenant_id}/schema`` as a pattern: a parameter is one path segment."""
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p))


class Unexpected:
    """Answer an exception no handler took with problem+json 500 ``internal_error`` and log it exactly once.

    When the answer had already started, it cannot become a 500: the error is logged and the response ends there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method", "?"), scope.get("path", "?"))
            if not started:
                response = problem(500, "internal_error", "internal error; see the service log")
                await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for lost in db.UNAVAILABLE:  # each class: a handler for Exception itself would re-raise after answering
        app.add_exception_handler(lost, _lost)
    # The first middleware added is the innermost: inside the request id's (added later), so the log line has it.
    app.add_middleware(Unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers a route can give."""
    from service.api.schemas import Problem

    return {status: {"description": HTTPStatus(status).phrase, "model": Problem} for status in statuses}


def problem_only(document: dict[str, Any]) -> dict[str, Any]:
    """Make every error answer in the OpenAPI document ``application/problem+json`` with the Problem schema.

    FastAPI documents error models as application/json and its own 422 with a different shape; the service
    answers every error as problem+json, so the document must say exactly that.
    """
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document
