"""What the console's templates need besides the domain values: rendering with the security headers, the version
chart, links that keep the list's filters, and a few formats."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote as _quote
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates

from service import __version__
from service.api.ui.session import Role
from service.fleet.rollout_store import Item

HERE: Final = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")

# Pages load only the service's own script and style sheet; no inline script can run, no other site can frame them.
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(request: Request, template: str, role: Role, **context: Any) -> Response:
    response = templates.TemplateResponse(
        request, template, {"role": role, "can_act": role in ("admin", "open"), "version": __version__, **context}
    )
    response.headers.update(_HEADERS)
    return response


def when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def compact(value: Any) -> str:
    """A difference's expected or actual value, or an event's detail, on one line."""
    return "" if value is None else json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))


templates.env.filters["when"] = when
templates.env.filters["ms"] = ms
templates.env.globals["static_version"] = __version__


@dataclass(frozen=True, slots=True)
class Bar:
    version: str
    count: int
    percent: float  # of the largest bar, for the chart's width
    latest: bool


def version_bars(by_version: Mapping[str, int], latest: int | None) -> list[Bar]:
    """One bar per version holding tenants, in version order, and the latest even when empty."""
    counts = dict(by_version)
    if latest is not None:
        counts.setdefault(str(latest), 0)
    top = max(counts.values(), default=0) or 1
    return [
        Bar(v, n, round(100 * n / top, 1), latest is not None and v == str(latest))
        for v, n in sorted(counts.items(), key=lambda kv: int(kv[0]))
    ]


# Rows of a rollout's tenants a page shows (console.js keeps the same order and limit while it polls).
ROLLOUT_ROWS: Final = 1000
_FIRST: Final = {"running": 0, "failed": 1}


def rollout_rows(items: Sequence[Item]) -> list[Item]:
    """What is happening first: running tenants, then failed ones, then the rest in run order."""
    return sorted(items, key=lambda i: (_FIRST.get(i.state, 2), i.position))[:ROLLOUT_ROWS]


templates.env.globals["rollout_rows_limit"] = ROLLOUT_ROWS


class Links:
    """Links of the tenant list that change one parameter and keep the others (a new filter starts at page 1)."""

    def __init__(self, params: Mapping[str, str]) -> None:
        self._params = {k: v for k, v in params.items() if v}

    def __call__(self, **changes: object) -> str:
        params = {**self._params, **{k: str(v) for k, v in changes.items() if v not in (None, "")}}
        for key in [k for k, v in changes.items() if v in (None, "")]:
            params.pop(key, None)
        if "page" not in changes:
            params.pop("page", None)
        return "/ui/tenants" + ("?" + urlencode(params) if params else "")

    def sorted_by(self, key: str, current: str, descending: bool) -> str:
        """Clicking the current sort column flips its order."""
        flip = key == current and not descending
        return self(sort=key, order="desc" if flip else None)


def safe_next(path: str) -> str:
    """Only a console path may follow a login: never another site (``//host``) or a scheme."""
    return path if path.startswith("/ui") and not path.startswith("//") and "\\" not in path else "/ui"


def quote(path: str) -> str:
    return _quote(path, safe="/")
