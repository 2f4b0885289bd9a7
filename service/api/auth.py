"""Bearer-token authorisation: the admin token may do everything, the read token only GET.

Tokens are compared in constant time and never logged. The acting role is kept in a context variable so the
catalog can record who did what (``service.audit``).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.errors import Forbidden, Unauthorized
from service.store.audit import actor

_bearer = HTTPBearer(auto_error=False, description="TENANTS_ADMIN_TOKEN, or TENANTS_READ_TOKEN for GET only.")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _matches(given: str, expected: object) -> bool:
    secret = getattr(expected, "get_secret_value", None)
    return secret is not None and hmac.compare_digest(given.encode(), str(secret()).encode())


async def authorize(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Raise Unauthorized (401) or Forbidden (403); open when no token is configured (loopback only)."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        actor.set("anonymous")
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    token = credentials.credentials
    if _matches(token, settings.admin_token):
        actor.set("admin")
        return
    if _matches(token, settings.read_token):
        if request.method not in _READ_METHODS:
            raise Forbidden()
        actor.set("read")
        return
    raise Unauthorized()
