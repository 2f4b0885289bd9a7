"""A real HTTP server for the browser (uvicorn in the test's event loop, on a free port of 127.0.0.1) and Debian's
chromium driven by Playwright. Playwright's own browser downloads are never used. In CI (``CI`` set, as .ci/run is
run) a missing chromium fails the test; elsewhere the browser tests are skipped with how to install it, so the
README's test command works on a machine without a browser."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from service.api.app import create_app
from service.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Not committed (.gitignore: .cache/): a person looks at them after a run.
SCREENSHOTS = Path(__file__).resolve().parents[1] / ".cache" / "screenshots"


@asynccontextmanager
async def live(settings: Settings) -> AsyncIterator[str]:
    """The app behind uvicorn on 127.0.0.1 (lifespan included); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", ws="none", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(600):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # raise what stopped it
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is missing: apt-get install -y chromium (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


async def create(base: str, tenant_id: str, token: str | None = None) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post("/tenants", json={"id": tenant_id}, headers=bearer(token))
        assert r.status_code == 201, r.text
        body: dict[str, object] = r.json()
        return body
