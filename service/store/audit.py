"""Who is acting: set once per request by the API's authorisation, read where operations are recorded."""

from __future__ import annotations

from contextvars import ContextVar

actor: ContextVar[str] = ContextVar("actor", default="system")
