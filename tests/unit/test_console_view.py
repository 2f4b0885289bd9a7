"""The console's view helpers: the version chart, links that keep the list's filters, where a login may lead, and
which of a big rollout's tenants a page shows."""

from __future__ import annotations

from service.api.ui import view
from service.fleet.rollout_store import Item


def test_version_bars_mark_the_latest_even_when_empty() -> None:
    bars = view.version_bars({"10": 3, "2": 6}, latest=11)
    assert [(b.version, b.count, b.percent, b.latest) for b in bars] == [
        ("2", 6, 100.0, False),
        ("10", 3, 50.0, False),
        ("11", 0, 0.0, True),
    ]
    assert view.version_bars({}, latest=None) == []


def test_links_keep_filters_and_reset_the_page() -> None:
    link = view.Links({"status": "behind", "q": "ac", "page": "3", "server": ""})
    assert link(page=4) == "/ui/tenants?status=behind&q=ac&page=4"
    assert link(status=None) == "/ui/tenants?q=ac"
    assert link.sorted_by("version", "version", False) == "/ui/tenants?status=behind&q=ac&sort=version&order=desc"
    assert link.sorted_by("version", "version", True) == "/ui/tenants?status=behind&q=ac&sort=version"
    assert link.sorted_by("id", "version", True) == "/ui/tenants?status=behind&q=ac&sort=id"


def test_a_login_only_leads_back_into_the_console() -> None:
    assert view.safe_next("/ui/tenants/acme?x=1") == "/ui/tenants/acme?x=1"
    for elsewhere in ("//evil.example/ui", "https://evil.example/ui", "/docs", "/ui\\..\\x", ""):
        assert view.safe_next(elsewhere) == "/ui"


def _item(position: int, state: str) -> Item:
    return Item(f"t{position}", position, False, 1, state, 1, None, None, None, None)  # type: ignore[arg-type]


def test_a_big_rollout_shows_running_and_failed_tenants_first() -> None:
    items = [_item(i, "succeeded") for i in range(1, 1500)] + [_item(1500, "failed"), _item(1501, "running")]
    shown = view.rollout_rows(items)
    assert len(shown) == view.ROLLOUT_ROWS
    assert [i.tenant_id for i in shown[:3]] == ["t1501", "t1500", "t1"]
