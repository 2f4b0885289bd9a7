"""Who is looking at the console: a cookie that proves the browser was given a token, without holding the token.

The console's pages are rendered on the server, so a page request must carry proof of a token; a browser cannot add
an ``Authorization`` header to a link it follows. ``POST /ui/session`` takes the token as a Bearer header (from the
login page's script, never in a URL or a form field a proxy might log) and answers with a cookie
``<role>.<expires>.<hmac>``: the HMAC-SHA256 of the role and expiry, keyed by the configured token of that role. The
cookie is HttpOnly (scripts cannot read it), ``SameSite=Strict`` (no other site's page can make the browser send it),
limited to ``/ui``, ``Secure`` under https, and without ``Max-Age`` (it dies with the browser session); it expires
after :data:`LIFETIME` anyway, and changing a token invalidates every cookie made from it. Nothing is kept on the
server, so every replica accepts it.

The cookie only opens the read-only pages. Actions are made by the pages' script through the JSON API with the
token as a Bearer header (kept in ``sessionStorage``), so they pass the API's own authorisation and audit trail, and
a forged cross-site request has no token to send.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final, Literal

from fastapi import Request, Response
from fastapi.security.utils import get_authorization_scheme_param

from service.config import Settings

Role = Literal["admin", "read", "open"]
COOKIE: Final = "tenants_console"
LIFETIME: Final = 12 * 3600  # seconds


class LoginRequired(Exception):
    """The console needs a token and the request brought no valid cookie: the handler redirects to the login."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _secret(settings: Settings, role: str) -> bytes | None:
    token = settings.admin_token if role == "admin" else settings.read_token if role == "read" else None
    return None if token is None else token.get_secret_value().encode()


def _mac(secret: bytes, role: str, expires: int) -> str:
    return hmac.new(secret, f"tenants-console:{role}:{expires}".encode(), hashlib.sha256).hexdigest()


def role_of_token(settings: Settings, token: str) -> Role | None:
    """The role a token grants, compared in constant time; ``None`` for an unknown token."""
    for role in ("admin", "read"):
        secret = _secret(settings, role)
        if secret is not None and hmac.compare_digest(token.encode(), secret):
            return role
    return None


def bearer(request: Request) -> str | None:
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    return token if scheme.lower() == "bearer" and token else None


def issue(response: Response, request: Request, settings: Settings, role: Role) -> None:
    """Set the session cookie for ``role`` on ``response``."""
    secret = _secret(settings, role)
    if secret is None:
        return
    expires = int(time.time()) + LIFETIME
    response.set_cookie(
        COOKIE,
        f"{role}.{expires}.{_mac(secret, role, expires)}",
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict", secure=request.url.scheme == "https")


def viewer(request: Request) -> Role:
    """Dependency: the role of the browser asking; raises LoginRequired when tokens are configured and its cookie
    is missing, expired or made with another token."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return "open"
    role, _, rest = request.cookies.get(COOKIE, "").partition(".")
    expires, _, mac = rest.partition(".")
    secret = _secret(settings, role) if role in ("admin", "read") else None
    if secret is None or not expires.isdigit() or int(expires) < time.time():
        raise LoginRequired(request.url.path)
    if not hmac.compare_digest(mac.encode(), _mac(secret, role, int(expires)).encode()):
        raise LoginRequired(request.url.path)
    return role  # type: ignore[return-value]
