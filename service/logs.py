"""Logging: readable text lines on a terminal, JSON lines otherwise (one object per event), every line of a request
carrying its request id.

``asgi-correlation-id`` sets the id (``X-Request-ID`` honoured when it looks sane, else generated) and its filter
copies it onto every record; ``python-json-logger`` renders records with their ``extra`` fields (tenant,
version, duration_ms, ...). The same configuration is handed to uvicorn so its access log is JSON too; uvicorn's
coloured copies of its messages (``color_message``) and any other terminal escape never reach a JSON line.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import Any, Final, Literal

from pythonjsonlogger.json import JsonFormatter

#: The tenant an operation works on; set by the provisioner, stamped on every log record of that operation.
tenant: ContextVar[str | None] = ContextVar("tenant", default=None)

_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# CSI sequences (colours, cursor moves) and the two-character escapes: what a terminal interprets.
_ANSI: Final = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def valid_request_id(value: str) -> bool:
    """Honour a caller's id unless it could smuggle something into logs (newlines, quotes, huge values)."""
    return _REQUEST_ID.fullmatch(value) is not None


class TenantFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "tenant"):
            record.tenant = tenant.get() or "-"
        return True


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class PlainJsonFormatter(JsonFormatter):
    """JSON lines without terminal escapes: a log file or collector shows them as ``\\u001b[36m`` noise."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data.pop("color_message", None)  # uvicorn's coloured copy of the message
        return {k: strip_ansi(v) if isinstance(v, str) else v for k, v in log_data.items()}


def resolve_format(fmt: Literal["json", "text"] | None) -> Literal["json", "text"]:
    """The format asked for; unset, text for a person at a terminal, JSON for a collector (logs go to stderr)."""
    if fmt is not None:
        return fmt
    return "text" if sys.stderr.isatty() else "json"


def config(level: str, fmt: Literal["json", "text"] | None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for the service and uvicorn."""
    formatter: dict[str, Any]
    if resolve_format(fmt) == "json":
        formatter = {
            "()": "service.logs.PlainJsonFormatter",
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
