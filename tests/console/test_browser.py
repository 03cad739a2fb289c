"""A real browser at the console: sign in, open the dashboard, halt trading through the confirmation.

Drives a system Chromium (Debian package `chromium`) with the `playwright` Python package; it never
downloads browsers. Skipped only when either is missing.
"""

from __future__ import annotations

import os
import re
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


CONTRAST_JS = """
() => {
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) { return c.slice(0, 3); }
    }
    return [255, 255, 255];
  };
  const selector = ".ibkrgw-ok, .ibkrgw-bad, .ibkrgw-status, .ibkrgw-pill, .ibkrgw-badge, .ibkrgw-muted";
  return Array.from(document.querySelectorAll(selector)).filter((el) => el.textContent.trim()).map((el) => {
    const [a, b] = [lum(rgb(getComputedStyle(el).color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    return { text: el.textContent.trim().slice(0, 30), cls: el.className, ratio };
  });
}
"""


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_status_text_is_readable_in_both_colour_schemes(live_server, superuser, scheme):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM_PATH)")
    from orders.models import OrderStatus
    from tests.factories import OrderEventFactory

    for status in (OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.PENDING_APPROVAL, OrderStatus.SIMULATED):
        OrderEventFactory(status=status)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(color_scheme=scheme).new_page()
            page.goto(f"{live_server.url}/admin/login/?next=/admin/dashboard/")
            page.fill("#id_username", superuser.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/dashboard/")
            measured = page.evaluate(CONTRAST_JS)
            page.goto(f"{live_server.url}/admin/orders/order/")
            measured += page.evaluate(CONTRAST_JS)
        finally:
            browser.close()

    assert len(measured) > 10
    low = [m for m in measured if m["ratio"] < 4.5]
    assert low == [], low


# The icon the browser asks for: the page's own <link rel=icon>, else /favicon.ico.
ICON_STATUS_JS = """
async () => {
  const link = document.querySelector("link[rel~='icon']");
  const response = await fetch(link ? link.href : "/favicon.ico", { cache: "no-store" });
  return [response.status, response.headers.get("content-type") || ""];
}
"""


def test_every_page_has_the_icon_the_browser_asks_for(live_server, superuser):
    """Without it, the first page of every session showed "Failed to load resource: 404" in the browser's
    console (the browser fetches /favicon.ico by itself), hiding the errors that matter among it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM_PATH)")

    seen: dict[str, list] = {}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.goto(f"{live_server.url}/admin/login/?next=/admin/dashboard/")
            seen["login"] = page.evaluate(ICON_STATUS_JS)
            page.fill("#id_username", superuser.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/dashboard/")
            seen["dashboard"] = page.evaluate(ICON_STATUS_JS)
            for name, path in (("orders", "/admin/orders/order/"), ("docs", "/api/docs/"), ("api", "/api/v1/")):
                page.goto(f"{live_server.url}{path}")
                seen[name] = page.evaluate(ICON_STATUS_JS)
        finally:
            browser.close()

    assert {name: status for name, (status, _) in seen.items()} == dict.fromkeys(seen, 200), seen
    assert all(kind.startswith("image/") for _, kind in seen.values()), seen


def test_the_header_says_so_when_the_console_server_cannot_be_reached(live_server, superuser):
    """The header asks the server for the state every few seconds. When that failed (the server down or
    restarting, a proxy answering 502) it kept the last answer: "trading allowed", the gateway "connected",
    reconciliation "done", all green, for as long as the server was gone."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM_PATH)")
    expect = sync_api.expect

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.clock.install()  # the header's 5 s poll runs when the test moves the clock, not in real time
            page.goto(f"{live_server.url}/admin/login/?next=/admin/dashboard/")
            page.fill("#id_username", superuser.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/dashboard/")
            switch, gateway = page.locator("#ibkrgw-header-switch"), page.locator("#ibkrgw-header-gateway")
            expect(switch).to_have_text("trading allowed")
            gateway_before = gateway.inner_text()

            for failure in ("abort", "502"):
                if failure == "abort":  # the server gone: the request fails outright
                    page.route("**/admin/console/status.json", lambda route: route.abort("connectionrefused"))
                else:  # a proxy in front of it answering for it
                    page.route("**/admin/console/status.json", lambda route: route.fulfill(status=502, body="x"))
                page.clock.run_for(6_000)
                expect(switch).to_have_text("UNKNOWN", timeout=20_000)
                expect(switch).to_have_class(re.compile(r"\bibkrgw-pill-bad\b"))
                expect(gateway).to_have_text(re.compile(r"^console server unreachable"))
                expect(gateway).to_have_class(re.compile(r"\bibkrgw-pill-bad\b"))
                page.unroute("**/admin/console/status.json")
                page.clock.run_for(6_000)
                expect(switch).to_have_text("trading allowed", timeout=20_000)
                expect(gateway).to_have_text(gateway_before)
        finally:
            browser.close()
