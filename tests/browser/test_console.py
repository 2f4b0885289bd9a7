"""The console in a real headless Chromium: the fleet's counts, a tenant's pending file and drift, a rollout started
from the page and watched live, and what a read token may see. Each page is screenshotted (tests/.cache/screenshots).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg
import httpx
from playwright.async_api import Page, expect

from service.config import Settings
from service.store.db import with_database
from tests.browser.support import chromium, create, live, screenshot
from tests.conftest import FIXTURES
from tests.drift_support import execute

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]


# Form controls a screen reader could not name: no <label>, no aria-label.
_UNLABELLED = """() => Array.from(document.querySelectorAll("input, select, textarea, button"))
    .filter((el) => el.type !== "hidden" && !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
        && !(el.tagName === "BUTTON" && el.textContent.trim()))
    .map((el) => el.outerHTML)"""


async def _accessible(page: Page, *, fresh: bool = True) -> None:
    """Every control is named; on a page just loaded, the first Tab stop skips to the content."""
    assert await page.evaluate(_UNLABELLED) == []
    if fresh:
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"


async def _count(page: Page, table: str, row: str) -> str:
    return (await page.locator(f'[data-testid="{table}"] tr[{row}] [data-count]').inner_text()).strip()


async def test_fleet_tenant_and_live_rollout_pages(
    pg_url: str, make_settings: Callable[..., Settings], migration_dir: Callable[[str], Path], serve: Serve
) -> None:
    folder = migration_dir("drift")
    later = folder.parent / "0002_notes.sql"
    shutil.move(folder / "0002_notes.sql", later)
    # Two tenants at version 1, made while 0002 did not exist yet.
    async with serve(make_settings(folder)) as client:
        for tid in ("old_a", "old_b"):
            assert (await client.post("/tenants", json={"id": tid})).status_code == 201
    shutil.move(later, folder / "0002_notes.sql")
    settings = make_settings(folder, fleet_cache_seconds=0)
    async with live(settings) as base, chromium() as browser:
        await create(base, "new_c")
        drifted = await create(base, "new_d")
        await execute(pg_url, str(drifted["database"]), "CREATE TABLE ui_extra (id integer)")
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            assert (await client.get("/tenants/new_d/drift")).json()["clean"] is False

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{base}/ui")
        assert await _count(page, "by-version", 'data-version="1"') == "2"
        assert await _count(page, "by-version", 'data-version="2"') == "2"
        await expect(page.locator('[data-testid="by-version"] tr.latest th')).to_contain_text("v2")
        await expect(page.locator('[data-testid="by-version"] tr.latest th')).to_contain_text("latest")
        assert await _count(page, "by-status", 'data-status="up_to_date"') == "1"
        assert await _count(page, "by-status", 'data-status="behind"') == "2"
        assert await _count(page, "by-status", 'data-status="drifted"') == "1"
        assert await _count(page, "by-status", 'data-status="failed"') == "0"
        assert await _count(page, "by-state", 'data-state="ready"') == "4"
        await expect(page.locator('tr[data-server="default"] [data-health]')).to_contain_text("healthy")
        await screenshot(page, "overview")

        await page.goto(f"{base}/ui/tenants")
        await expect(page.locator('[data-testid="tenants"] tbody tr')).to_have_count(4)
        await page.get_by_label("Status").select_option("behind")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator('[data-testid="tenants"] tbody tr')).to_have_count(2)
        await expect(page.locator('[data-testid="match-count"]')).to_contain_text("2 tenants match")
        await page.goto(f"{base}/ui/tenants?sort=version&order=desc")
        assert await page.locator('[data-testid="tenants"] tbody tr th').all_inner_texts() == [
            "new_c",
            "new_d",
            "old_a",
            "old_b",
        ]
        await _accessible(page)
        await screenshot(page, "tenants")

        await page.goto(f"{base}/ui/tenants/old_a")
        await expect(page.locator('[data-testid="pending"]')).to_have_text("0002_notes.sql")
        await expect(page.locator('[data-testid="status"]')).to_have_text("behind")
        await expect(page.locator('[data-testid="history"] tbody tr')).to_have_count(2)
        await screenshot(page, "tenant-behind")
        await page.goto(f"{base}/ui/tenants/new_d")
        await expect(page.locator('[data-testid="status"]')).to_have_text("drifted")
        await expect(page.locator('[data-testid="differences"] tbody')).to_contain_text("ui_extra")
        await expect(page.locator('[data-testid="differences"] tbody')).to_contain_text("unexpected")
        await screenshot(page, "tenant-drifted")

        # The rollout waits on a table lock in old_b's database until the page has shown it running.
        blocker = await asyncpg.connect(with_database(pg_url, f"{settings.db_prefix}old_b"))
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
            await page.goto(f"{base}/ui/rollouts")
            await _accessible(page)
            await page.get_by_label("Canaries").fill("1")
            await page.get_by_label("Concurrency").fill("2")
            await page.get_by_role("button", name="Start rollout").click()
            await page.wait_for_url("**/ui/rollouts/*")
            progress = page.locator("[data-live-rollout]")
            await expect(progress).to_have_attribute("data-state", "running")
            await expect(page.locator('[data-item="old_a"]')).to_contain_text("succeeded", timeout=20_000)
            await page.evaluate("window.stillTheSamePage = true")
            await screenshot(page, "rollout-running")
            await tx.rollback()
        finally:
            await blocker.close()
        await expect(progress).to_have_attribute("data-state", "succeeded", timeout=20_000)
        await expect(page.locator('[data-item="old_b"]')).to_contain_text("succeeded")
        await expect(page.locator('[data-field="done"]').first).to_have_text("2")
        assert await page.evaluate("window.stillTheSamePage === true")  # updated live, not reloaded
        await screenshot(page, "rollout")
        await page.goto(f"{base}/ui/rollouts")
        await expect(page.locator('[data-testid="rollouts"] tbody tr')).to_have_count(1)
        await screenshot(page, "rollouts")
        await page.goto(f"{base}/ui")
        assert await _count(page, "by-status", 'data-status="up_to_date"') == "3"
        assert await _count(page, "by-version", 'data-version="2"') == "4"
        await screenshot(page, "overview-after-rollout")
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.reload()
        await screenshot(page, "overview-phone")


ADMIN = "admin-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


async def test_tokens_read_sees_everything_without_actions_admin_acts_through_the_api(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(FIXTURES / "ok", admin_token=ADMIN, read_token=READ, fleet_cache_seconds=0)
    async with live(settings) as base, chromium() as browser:
        await create(base, "tok_a", ADMIN)
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            refused = await client.get("/ui/tenants/tok_a")
            assert refused.status_code == 303
            assert refused.headers["location"] == "/ui/login?next=/ui/tenants/tok_a"
            forged = await client.get("/ui", headers={"Cookie": "tenants_console=admin.99999999999.00"})
            assert forged.status_code == 303
            assert (await client.post("/ui/session", headers={"Authorization": "Bearer nope"})).status_code == 401

        reader = await browser.new_page(viewport={"width": 1280, "height": 900})
        await reader.goto(f"{base}/ui/tenants/tok_a")
        assert reader.url.startswith(f"{base}/ui/login")
        await _accessible(reader)
        await screenshot(reader, "login")
        await reader.get_by_label("Access token").fill("not-a-token-0123456789")
        await reader.get_by_role("button", name="Sign in").click()
        await expect(reader.locator("[data-login-error]")).to_be_visible()
        await reader.get_by_label("Access token").fill(READ)
        await reader.get_by_role("button", name="Sign in").click()
        await reader.wait_for_url(f"{base}/ui/tenants/tok_a")
        await expect(reader.locator('[data-testid="role"]')).to_have_text("read token")
        await expect(reader.locator('[data-testid="history"] tbody tr')).to_have_count(2)
        assert await reader.locator("[data-action], [data-delete], [data-testid=actions]").count() == 0
        await screenshot(reader, "tenant-read-token")
        await reader.goto(f"{base}/ui/rollouts")
        assert await reader.locator("[data-start-rollout], [data-cancel-rollout]").count() == 0
        await reader.goto(f"{base}/ui")
        await expect(reader.locator('[data-testid="tenant-total"]')).to_have_text("1")
        cookies = await reader.context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [
            ("tenants_console", True, "Strict", "/ui")
        ]
        assert READ not in cookies[0]["value"]

        admin = await browser.new_page(viewport={"width": 1280, "height": 900})
        await admin.goto(f"{base}/ui/login?next=/ui/tenants/tok_a")
        await admin.get_by_label("Access token").fill(ADMIN)
        await admin.get_by_role("button", name="Sign in").click()
        await admin.wait_for_url(f"{base}/ui/tenants/tok_a")
        admin.on("dialog", lambda dialog: dialog.accept())
        await admin.get_by_role("button", name="Rotate credentials").click()
        secret = admin.get_by_label("Connection URL")
        await expect(secret).to_have_value(re.compile(r"^postgresql://"))
        url = await secret.input_value()
        await _accessible(admin, fresh=False)
        await screenshot(admin, "tenant-admin-rotated")
        await admin.reload()
        await expect(admin.locator("[data-secret]")).to_be_hidden()
        assert url.split("@")[0] not in await admin.content()  # shown once: never in a page
        events = admin.locator('[data-testid="events"] tbody tr').first
        await expect(events).to_contain_text("rotate")
        await expect(events).to_contain_text("admin")
        # Delete keeps the tenant (closed) until it is undeleted or purged; both from the page.
        await admin.get_by_label("Type tok_a to delete this tenant").fill("tok_a")
        await admin.get_by_role("button", name="Delete tenant").click()
        await expect(admin.locator('[data-testid="state"]')).to_have_text("deleted")
        await expect(admin.locator('[data-testid="deleted"]')).to_be_visible()
        await screenshot(admin, "tenant-deleted")
        await admin.get_by_role("button", name="Undelete").click()
        await expect(admin.locator('[data-testid="state"]')).to_have_text("ready")
        await expect(admin.locator('[data-testid="events"] tbody tr').first).to_contain_text("undelete")
        assert ADMIN not in admin.url
        assert READ not in reader.url
