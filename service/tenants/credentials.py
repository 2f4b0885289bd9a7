"""A tenant's login credentials: random passwords, their SCRAM verifiers, and the URL handed to the tenant (pure).

The clear password exists only in this process, long enough to answer the request that made it: the server is sent
the SCRAM-SHA-256 verifier PostgreSQL would compute itself, so the password never appears in a statement the server
could log, show in ``pg_stat_activity`` or keep in ``pg_stat_statements``. The catalog stores nothing about it,
except a queued creation's verifier (what ``pg_authid`` keeps too) until its worker has made the role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import parse_qs, quote, urlencode, urlsplit

PASSWORD_BYTES: Final = 32
SCRAM_ITERATIONS: Final = 4096  # PostgreSQL's default scram_iterations
_SALT_BYTES: Final = 16
_KEPT_QUERY: Final = ("sslmode",)


def new_password() -> str:
    """43 URL-safe characters (256 bits): no quote, backslash or ``%`` to escape anywhere."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def scram_sha256(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The verifier PostgreSQL stores for ``password``: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``.

    Only for ASCII passwords (those of :func:`new_password`), where SASLprep changes nothing; raises ``ValueError``
    otherwise. RFC 5802 / RFC 7677, as in PostgreSQL's ``scram_build_secret``.
    """
    if not password.isascii():
        raise ValueError("only ASCII passwords are supported")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def connection_url(admin_dsn: str, role: str, password: str, database: str) -> str:
    """``postgresql://<role>:<password>@<host>:<port>/<database>``, host and port taken from the admin URL.

    Of the admin URL's query only ``sslmode`` is kept: anything else (a user, a password) is the admin's.
    """
    parts = urlsplit(admin_dsn)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or 5432
    kept = {k: v[-1] for k, v in parse_qs(parts.query).items() if k in _KEPT_QUERY}
    query = f"?{urlencode(kept)}" if kept else ""
    userinfo = f"{quote(role, safe='')}:{quote(password, safe='')}"
    return f"postgresql://{userinfo}@{host}:{port}/{quote(database, safe='')}{query}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
