"""Bearer tokens: who may read, who may write, and the audit trail of who did what."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.conftest import FIXTURES

ADMIN = "admin-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(FIXTURES / "ok", admin_token=ADMIN, read_token=READ)


async def test_every_token_and_route_combination(secured: Settings, serve: Serve) -> None:
    async with serve(secured) as client:
        created = await client.post("/tenants", json={"id": "a1"}, headers=bearer(ADMIN))
        assert created.status_code == 201
        cases = [
            ("GET", "/tenants", None),
            ("GET", "/tenants/a1", None),
            ("GET", "/tenants/a1/schema", None),
            ("GET", "/tenants/a1/events", None),
            ("GET", "/migrations", None),
            ("POST", "/tenants", {"id": "a2"}),
            ("POST", "/tenants/a1/migrate", {}),
            ("DELETE", "/tenants/a1?confirm=a1", None),
        ]
        for method, path, body in cases:
            for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": "Basic YTpi"}):
                r = await client.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["code"] == "unauthorized"
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"] == "Bearer"
            r = await client.request(method, path, json=body, headers=bearer(READ))
            if method == "GET":
                assert r.status_code == 200, (method, path, r.text)
            else:
                assert r.status_code == 403, (method, path)
                assert r.json()["code"] == "forbidden"
        # the read token changed nothing
        assert (await client.get("/tenants/a2", headers=bearer(ADMIN))).status_code == 404
        assert (await client.get("/tenants/a1", headers=bearer(ADMIN))).json()["state"] == "ready"
        # probes stay open
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_events_record_who_did_what(secured: Settings, serve: Serve) -> None:
    async with serve(secured) as client:
        assert (await client.post("/tenants", json={"id": "ev"}, headers=bearer(ADMIN))).status_code == 201
        assert (await client.post("/tenants", json={"id": "ev"}, headers=bearer(ADMIN))).status_code == 200
        assert (await client.post("/tenants/ev/migrate", headers=bearer(ADMIN))).status_code == 200
        assert (await client.delete("/tenants/ev?confirm=ev", headers=bearer(ADMIN))).status_code == 204
        r = await client.get("/tenants/ev/events", headers=bearer(READ))
        assert r.status_code == 200
        items = r.json()["items"]
        assert [e["kind"] for e in items] == ["delete", "create", "create"]  # a migrate with nothing pending is a no-op
        assert {e["actor"] for e in items} == {"admin"}
        assert all(e["state"] == "succeeded" for e in items)
        assert items[1]["detail"] == {"replay": True}
        assert (await client.get("/tenants/never/events", headers=bearer(READ))).status_code == 404


def test_tokens_must_not_be_placeholders_or_short() -> None:
    with pytest.raises(ValidationError):
        Settings(admin_token="short")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(admin_token="changemechangeme")  # type: ignore[arg-type]


def test_token_never_appears_in_settings_repr() -> None:
    settings = Settings(admin_token=ADMIN)  # type: ignore[arg-type]
    assert ADMIN not in repr(settings)
    assert ADMIN not in str(settings.model_dump())
