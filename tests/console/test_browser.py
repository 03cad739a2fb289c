"""A real browser at the console: sign in, open the dashboard, halt trading through the confirmation.

Drives a system Chromium (Debian package `chromium`) with the `playwright` Python package; it never
downloads browsers. Skipped only when either is missing.
"""

from __future__ import annotations

import os
import shutil

import pytest

from orders.selectors import trading_halted, trading_switch_latest
from tests.console.conftest import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

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
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str | None:
    candidates = (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", shutil.which("chromium"))
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def test_operator_halts_trading_from_the_dashboard(live_server, superuser, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM_PATH)")
    screenshot = tmp_path / "dashboard-halted.png"

    # No ORM calls while Playwright runs: its event loop would make Django refuse them in this thread.
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            watcher, operator = context.new_page(), context.new_page()

            operator.goto(f"{live_server.url}/admin/login/?next=/admin/")
            operator.fill("#id_username", superuser.username)
            operator.fill("#id_password", PASSWORD)
            operator.click("input[type=submit]")
            operator.click("#ibkrgw-dashboard-link")
            operator.wait_for_url("**/admin/dashboard/")
            sync_api.expect(operator.locator("#ibkrgw-switch-state")).to_contain_text("trading allowed")

            # A second tab keeps the dashboard open to see it refresh by itself.
            watcher.goto(f"{live_server.url}/admin/dashboard/")
            sync_api.expect(watcher.locator("#ibkrgw-switch-state")).to_contain_text("trading allowed")

            operator.click("#ibkrgw-halt")
            operator.wait_for_url("**/admin/dashboard/halt/")
            operator.fill("#id_reason", "browser drill")
            operator.check("#id_confirm")
            operator.click("#ibkrgw-switch-submit")
            operator.wait_for_url("**/admin/dashboard/")
            sync_api.expect(operator.locator("#ibkrgw-switch-state")).to_contain_text("TRADING HALTED")
            sync_api.expect(operator.locator(".messagelist")).to_contain_text("Trading halted")
            sync_api.expect(operator.locator("#ibkrgw-halted-badge")).to_be_visible()
            operator.screenshot(path=str(screenshot), full_page=True)

            sync_api.expect(watcher.locator("#ibkrgw-switch-state")).to_contain_text("TRADING HALTED", timeout=15_000)
        finally:
            browser.close()

    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert trading_halted()
    assert trading_switch_latest().reason == "browser drill"
