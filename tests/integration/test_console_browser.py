"""The emulator's browser console in headless Chromium (Playwright, Debian's chromium):
connect with the pre-filled dev token, send `generate_report`, watch it finish; cancel;
see a server push. The console talks through @streamer/client (its vendored build)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from browser_check import CHROMIUM, HAS_CHROMIUM, SKIP_REASON

from emulator.server import Emulator, EmulatorConfig
from streamer.settings import Settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_MS = 20_000
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not HAS_CHROMIUM, reason=SKIP_REASON),
]


@pytest.fixture
async def dev_emulator(dynamodb_settings: Settings, tmp_path: Path) -> AsyncIterator[Emulator]:
    """The demo app with dev keys, as `make run` starts it (so /api/dev-token answers)."""
    config = EmulatorConfig(
        settings=dataclasses.replace(dynamodb_settings, jwt_public_key=None),
        app="streamer.demo:app",
        port=0,
        http_port=0,
        state_dir=tmp_path / ".streamer",
        poll_interval_s=0.02,
        drain_timeout_s=2.0,
        create_tables=False,
    )
    async with Emulator(config) as emulator:
        yield emulator


async def test_console_sends_generate_report_and_shows_it_finish(
    dev_emulator: Emulator,
) -> None:
    from playwright.async_api import async_playwright

    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda error: errors.append(str(error)))
            loaded: list[str] = []
            page.on("response", lambda response: loaded.append(f"{response.status} {response.url}"))
            await page.goto(f"{dev_emulator.http_url}/")
            await page.wait_for_selector("body[data-ready=true]")
            assert await page.input_value("#ws-url") == dev_emulator.ws_url
            assert (await page.input_value("#token")).count(".") == 2

            await page.click("#connect")
            await page.wait_for_selector("#connection-state.pill-open")
            await page.wait_for_selector("#connections td:has-text('dev-user')")
            client = "window.streamerConsole.state.client.constructor.name"
            assert await page.evaluate(client) == "StreamerClient"
            vendored = f"200 {dev_emulator.http_url}/vendor/streamer-client/index.js"
            assert vendored in loaded

            await page.select_option("#action", "generate_report")
            template = json.loads(await page.input_value("#payload"))
            assert template["start_date"] <= template["end_date"]
            assert template["format"] == "pdf"
            await page.click("#send")

            request = page.locator("[data-request-id]").first
            await page.wait_for_selector("[data-request-id][data-status=running]")
            await page.wait_for_selector("[data-request-id][data-status=completed]")
            assert await request.locator("progress").evaluate("bar => bar.value") == 100
            assert await request.locator(".percent").inner_text() == "100%"
            result = json.loads(await request.locator(".outcome").inner_text())
            assert result["format"] == "pdf"
            assert result["url"].endswith(".pdf")

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        finally:
            await browser.close()
    assert errors == []


async def test_console_shows_a_server_error_with_its_code(dev_emulator: Emulator) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{dev_emulator.http_url}/")
            await page.wait_for_selector("body[data-ready=true]")
            await page.click("#connect")
            await page.wait_for_selector("#connection-state.pill-open")
            await page.select_option("#action", "validate_example")
            await page.fill("#payload", '{"name": "a"}')
            await page.click("#send")

            await page.wait_for_selector("[data-request-id][data-status=failed]")
            outcome = await page.locator("[data-request-id] .outcome").inner_text()
            assert outcome.startswith("VALIDATION_ERROR: ")
        finally:
            await browser.close()


async def test_console_cancel_button_aborts_a_running_request(dev_emulator: Emulator) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{dev_emulator.http_url}/")
            await page.wait_for_selector("body[data-ready=true]")
            await page.click("#connect")
            await page.wait_for_selector("#connection-state.pill-open")
            await page.select_option("#action", "delay")
            await page.fill("#payload", '{"seconds": 60}')
            await page.click("#send")

            await page.wait_for_selector("[data-request-id][data-status=running]")
            await page.click("[data-request-id] .cancel")
            await page.wait_for_selector("[data-request-id][data-status=cancelled]")
            outcome = await page.locator("[data-request-id] .outcome").inner_text()
            assert outcome.startswith("CANCELLED: ")
        finally:
            await browser.close()


async def test_console_shows_a_notification_pushed_to_its_connection(
    dev_emulator: Emulator,
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{dev_emulator.http_url}/")
            await page.wait_for_selector("body[data-ready=true]")
            await page.click("#connect")
            await page.wait_for_selector("#connection-id:has-text('Connection id: ')")
            text = await page.locator("#connection-id").inner_text()
            connection_id = text.removeprefix("Connection id: ")
            assert dev_emulator.services is not None
            summary = await dev_emulator.services.push.to_connection(
                connection_id, {"hello": 1}, topic="news"
            )
            assert summary.sent == 1

            item = page.locator("#notifications .notification").first
            await item.wait_for()
            assert await item.locator(".topic").inner_text() == "news"
            assert json.loads(await item.locator(".notification-data").inner_text()) == {"hello": 1}
            assert await page.locator("#notifications-count").inner_text() == "1"
        finally:
            await browser.close()
