"""Logging: JSON lines by default (one object per event), every line of a request carrying its request id.

``asgi-correlation-id`` sets the id (``X-Request-ID`` honoured when it looks sane, else generated) and its filter
copies it onto every record; ``python-json-logger`` renders records with their ``extra`` fields (tenant,
version, duration_ms, ...). The same configuration is handed to uvicorn so its access log is JSON too.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Any, Final, Literal

#: The tenant an operation works on; set by the provisioner, stamped on every log record of that operation.
tenant: ContextVar[str | None] = ContextVar("tenant", default=None)

_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def valid_request_id(value: str) -> bool:
    """Honour a caller's id unless it could smuggle something into logs (newlines, quotes, huge values)."""
    return _REQUEST_ID.fullmatch(value) is not None


class TenantFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "tenant"):
            record.tenant = tenant.get() or "-"
        return True


def config(level: str, fmt: Literal["json", "text"]) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for the service and uvicorn."""
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s %(tenant)s",
            "rename_fields": {
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "correlation_id": "request_id",
            },
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)s [%(correlation_id)s %(tenant)s] %(name)s: %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "filters": ["request_id", "tenant"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "asgi_correlation_id.CorrelationIdFilter", "default_value": "-"},
            "tenant": {"()": "service.logs.TenantFilter"},
        },
        "formatters": {"main": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
        },
    }
