"""Headless Chromium (Debian's package) driven by Playwright, against a cluster of real processes."""

from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.support import TEST_RUN_DIR, running_cluster

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# Calls (issue 17): fake camera and microphone (a test pattern and a tone), granted without a
# prompt; host candidates on loopback too, so two pages of one machine meet without STUN.
CALL_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
             "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required"]
SCREENSHOTS = TEST_RUN_DIR / "screenshots"


@pytest.fixture(scope="module")
def web_cluster(stores):
    """Gateways in development mode, so the page offers users to sign in as."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "browser", DEV_MODE="true") as running:
        yield running


@pytest.fixture
async def browser():
    assert Path(CHROMIUM).exists(), "chromium is installed by scripts/system-deps.sh (make test)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def call_browser():
    """A Chromium with fake media devices, for the call tests."""
    assert Path(CHROMIUM).exists(), "chromium is installed by scripts/system-deps.sh (make test)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                    args=CHROMIUM_ARGS + CALL_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
def shoot():
    """Saves a screenshot of a step under .run/test/screenshots/, to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async def take(page, name: str) -> None:
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take
