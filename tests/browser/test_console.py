"""The console in a real headless Chromium: the fleet's counts, a tenant's pending file and drift, a rollout started
from the page and watched live, and what a read token may see. Each page is screenshotted (tests/.cache/screenshots).
"""

from __future__ import annotations

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
from tests.drift_support import execute

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]


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
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(f"{base}/ui")
        assert await _count(page, "by-status", 'data-status="up_to_date"') == "3"
        await screenshot(page, "overview-phone")
