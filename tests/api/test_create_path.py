"""The path of one ``POST /tenants`` through the packages, traced on a real server: each step's module is entered in
order, and the facade is a single hop, never a hub the steps return to (issue: the house in rooms)."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import httpx

from service.config import Settings

# The steps of a creation, in order: each entered exactly once.
STEPS = [
    ("service.api.routes.tenants", "create_tenant"),
    ("service.tenants.provisioner", "create"),
    ("service.tenants.create", "create"),
    ("service.tenants.placement", "place"),
    ("service.tenants.owned", "create_role"),
    ("service.tenants.roles", "create"),
    ("service.tenants.owned", "create_database"),
    ("service.history.runner", "apply"),
]


def _trace(calls: list[tuple[str, str]]) -> Any:
    """Record each new call of a service function; a coroutine resumed after an await is the same call (its frame
    was seen before), so it is not recorded again."""
    seen: dict[int, FrameType] = {}  # frames kept alive, so an id is never reused during the trace

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and id(frame) not in seen:
            seen[id(frame)] = frame
            module = frame.f_globals.get("__name__", "")
            if module.startswith("service."):
                calls.append((module, frame.f_code.co_name))

    return profile


async def test_create_visits_each_step_once_without_a_hub(client: httpx.AsyncClient, settings: Settings) -> None:
    assert (await client.get("/readyz")).status_code == 200
    calls: list[tuple[str, str]] = []
    sys.setprofile(_trace(calls))
    try:
        r = await client.post("/tenants", json={"id": "path"})
    finally:
        sys.setprofile(None)
    assert r.status_code == 201, r.text

    for step in STEPS:
        assert calls.count(step) == 1, step
    positions = [calls.index(step) for step in STEPS]
    assert positions == sorted(positions), dict(zip(STEPS, positions, strict=True))
    # The facade is one hop, entered once by the route; every later step is driven from tenants.create, and no
    # step calls back into the facade or the route.
    assert [c for c in calls if c[0] == "service.tenants.provisioner"] == [("service.tenants.provisioner", "create")]
    after = {m for m, _ in calls[positions[2] :]}
    assert "service.tenants.provisioner" not in after
    assert "service.api.routes.tenants" not in after
