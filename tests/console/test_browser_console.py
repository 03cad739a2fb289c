"""A real browser at the console, against a real daphne server (its own IB runtime on the simulated
gateway, the order stream on /ws/orders/ with session auth): place from the form, see it pushed to
the list, cancel from the row, approve a held order, charts with data, halt, and the API docs
loading nothing from elsewhere.

Drives a system Chromium (Debian package `chromium`) with the `playwright` Python package; skipped
only when either is missing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.models import AccountSnapshot
from orders.models import Order, OrderEvent
from orders.selectors import trading_halted
from tests.conftest import subprocess_database_url, wait_for
from tests.console.conftest import PASSWORD
from tests.console.test_browser import CHROMIUM_ARGS, _chromium
from tests.ws.conftest import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 20_000
WIDTHS = """() => { const box = document.querySelector("#changelist .results");
  return [box && box.scrollWidth, box && box.clientWidth, window.innerWidth,
    ...Array.from(document.querySelectorAll("#result_list thead th")).map(
      (th) => th.className + ":" + Math.round(th.getBoundingClientRect().width))]; }"""
# Neither the page nor the list's own box scrolls sideways, and the table is not cut off.
FITS = """() => {
  const doc = document.documentElement, box = document.querySelector("#changelist .results");
  const table = document.querySelector("#result_list");
  return doc.scrollWidth <= window.innerWidth
    && (!box || box.scrollWidth <= box.clientWidth)
    && (!table || table.getBoundingClientRect().right <= window.innerWidth);
}"""


def _http(port: int, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    status, data = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, data


@pytest.fixture
def trade_key(transactional_db) -> str:
    from ibkrgw.models import ScopedAPIKey

    return ScopedAPIKey.objects.create_key(name="browser-agent", scope="trade")[1]


@pytest.fixture
def server(sim_gateway, trade_key):
    """daphne in its own process, on this test's database and simulated gateway."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("IBKRGW_NO_BROKER", "CHANNEL_LAYER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="ibkrgw.settings",
        DATABASE_URL=subprocess_database_url(),
        IB_GATEWAY=f"127.0.0.1:{sim_gateway.port}",
        IB_CLIENT_ID="9",
        IB_THROTTLE="false",
        ORDERS_ENABLED="true",
        TRADING_HOURS="always",
        APPROVAL_REQUIRED_FOR="api_key",  # orders from API keys wait for the operator
        ACCOUNT_SNAPSHOT_INTERVAL_S="1",
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "tests.console.asgi_static:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("daphne did not start")
        try:
            if _http(port, trade_key, "GET", "/api/v1/health/")[1].get("reconciliation") == "done":
                break
        except OSError:
            pass
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", port
    proc.terminate()
    proc.wait(10)


def test_operator_trades_from_the_console(server, sim_gateway, superuser, trade_key):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM_PATH)")
    url, port = server
    expect = sync_api.expect
    sim_gateway.pause_market()  # a still market: the limit order rests, fills are deterministic
    last = sim_gateway.quote("AAPL")["last"]
    limit = f"{(last * Decimal('0.98')).quantize(Decimal('0.01'))}"
    outside: list[str] = []
    blocked: list[tuple[str, str | None]] = []

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            # Every request must go to this server (blob: and data: URLs never leave the browser; a request
            # the page's Content-Security-Policy blocks is refused before it is sent).
            local = (url, "blob:", "data:")
            context.on("request", lambda r: outside.append(r.url) if not r.url.startswith(local) else None)
            context.on("requestfailed", lambda r: blocked.append((r.url, r.failure)))
            watcher, operator = context.new_page(), context.new_page()

            operator.goto(f"{url}/admin/login/?next=/admin/")
            operator.fill("#id_username", superuser.username)
            operator.fill("#id_password", PASSWORD)
            operator.click("input[type=submit]")
            expect(operator.locator("#ibkrgw-header-gateway")).to_have_text("connected")

            # A second tab keeps the order list open: it must change without being reloaded.
            watcher.goto(f"{url}/admin/orders/order/")
            expect(watcher.locator("#ibkrgw-stream-state")).to_have_text("live", timeout=WAIT_MS)
            watcher.evaluate("window.__notReloaded = true")
            # No sideways scrolling at 1400 px.
            assert watcher.evaluate(FITS), "the order list scrolls sideways"

            # -- place from the form, with the confirmation page
            operator.click("#ibkrgw-nav-new-order")
            operator.fill("#id_symbol", "AAPL")
            operator.select_option("#id_action", "BUY")
            operator.fill("#id_quantity", "2")
            operator.select_option("#id_order_type", "LMT")
            operator.fill("#id_limit_price", limit)
            operator.click("#ibkrgw-order-review")
            expect(operator.locator("#ibkrgw-order-confirm")).to_contain_text("BUY 2 AAPL LMT limit")
            expect(operator.locator("#ibkrgw-notional")).not_to_have_text("—")
            expect(operator.locator("#ibkrgw-margin")).not_to_have_text("—")
            operator.check("#id_confirm")
            operator.click("#ibkrgw-place")
            expect(operator.locator(".messagelist")).to_contain_text("placed")
            cid = operator.locator(".messagelist").inner_text().split("Order ", 1)[1].split(" placed", 1)[0]

            # -- pushed to the open list, which was not reloaded
            row = watcher.locator("#result_list tr", has_text=cid)
            expect(row).to_contain_text("submitted", timeout=WAIT_MS)
            assert watcher.evaluate("window.__notReloaded === true")

            assert watcher.evaluate(FITS), "the order list scrolls sideways with an order in it"

            # -- cancel from the row
            row.locator("a.ibkrgw-row-cancel").click()
            expect(watcher.locator("#ibkrgw-cancel-confirm")).to_contain_text(cid)
            watcher.click("#ibkrgw-cancel-submit")
            expect(watcher.locator(".messagelist")).to_contain_text("cancel sent")
            watcher.goto(f"{url}/admin/orders/order/")
            expect(watcher.locator("#result_list tr", has_text=cid)).to_contain_text("cancelled", timeout=WAIT_MS)

            # -- an agent's order waits for approval: it appears on the open dashboard by itself
            operator.goto(f"{url}/admin/dashboard/")
            expect(operator.locator("#ibkrgw-stream-state")).to_have_text("live", timeout=WAIT_MS)
            body = {"client_order_id": "agent-held", "symbol": "AAPL", "action": "BUY", "quantity": "3",
                    "order_type": "MKT"}  # fmt: skip
            status, held = _http(port, trade_key, "POST", "/api/v1/orders/", body)
            assert status == 201 and held["status"] == "pending_approval", held
            expect(operator.locator("#ibkrgw-approvals")).to_contain_text("agent-held", timeout=WAIT_MS)
            operator.click("#ibkrgw-review-agent-held")
            expect(operator.locator("#ibkrgw-approve-confirm .ibkrgw-countdown")).to_have_text(
                re.compile(r"^\d+:\d\d$")
            )
            expect(operator.locator("#ibkrgw-order-context")).to_contain_text("Notional")
            operator.check("#ibkrgw-approve-check")
            operator.click("#ibkrgw-approve-submit")
            expect(operator.locator(".messagelist")).to_contain_text("Order agent-held approved and sent.")

            # -- charts: candles with the fill marked, and the equity series (screenshot-free checks)
            operator.goto(f"{url}/admin/console/charts/?symbol=AAPL")
            # As few bars as one: minutes after the session opened, the two hours shown hold only those minutes.
            operator.wait_for_function(
                "window.ibkrgwCharts && window.ibkrgwCharts.price && window.ibkrgwCharts.price.bars >= 1"
                " && window.ibkrgwCharts.price.markers >= 1",
                timeout=WAIT_MS,
            )
            # The broker's net liquidation, recorded by the snapshot chore, on its own (left) scale.
            operator.wait_for_function(
                "window.ibkrgwCharts.equity && window.ibkrgwCharts.equity.points >= 1"
                " && window.ibkrgwCharts.equity.equity >= 1",
                timeout=WAIT_MS,
            )
            equity_drawn = operator.evaluate(
                "[window.ibkrgwCharts.equity.netLiquidation.data().slice(-1)[0],"
                " window.ibkrgwCharts.equity.chart.options().leftPriceScale.visible]"
            )
            drawn = operator.evaluate(
                "window.ibkrgwCharts.price.series.data().length + ':' + "
                "document.querySelectorAll('#ibkrgw-price-chart canvas').length"
            )
            bars, canvases = (int(n) for n in drawn.split(":"))
            assert bars >= 1 and canvases >= 1
            assert operator.locator("#ibkrgw-price-chart").get_attribute("data-markers") != "0"

            # -- halt: the header of every page says so
            operator.goto(f"{url}/admin/dashboard/")
            operator.click("#ibkrgw-halt")
            operator.fill("#id_reason", "browser drill")
            operator.check("#id_confirm")
            operator.click("#ibkrgw-switch-submit")
            expect(operator.locator("#ibkrgw-header-switch")).to_have_text("HALTED")
            expect(watcher.locator("#ibkrgw-header-switch")).to_have_text("HALTED", timeout=WAIT_MS)

            # -- the other lists fit a 1400 px window too
            for path in ("/admin/orders/fill/", "/admin/audit/auditentry/", "/admin/orders/orderevent/"):
                watcher.goto(f"{url}{path}")
                assert watcher.evaluate(FITS), (path, *watcher.evaluate(WIDTHS))

            # -- the API docs render from local files only
            outside.clear()
            docs = context.new_page()
            docs.goto(f"{url}/api/docs/")
            expect(docs.locator(".swagger-ui .info .title")).to_contain_text("ibkr-gateway API", timeout=WAIT_MS)
            docs.goto(f"{url}/api/redoc/")
            expect(docs.locator("redoc h1, #redoc-container h1").first).to_contain_text("ibkr-gateway API",
                                                                                       timeout=WAIT_MS)  # fmt: skip
        finally:
            browser.close()

    net_liquidation, left_scale_shown = equity_drawn
    drawn_at = datetime.fromtimestamp(net_liquidation["time"], UTC)
    recorded = AccountSnapshot.objects.filter(taken_at__gte=drawn_at, taken_at__lt=drawn_at + timedelta(seconds=1))
    assert net_liquidation["value"] == float(recorded.earliest("taken_at").net_liquidation) > 0
    assert left_scale_shown
    sent = [u for u in outside if (u, "csp") not in blocked]
    assert sent == [], (outside, blocked)
    order = Order.objects.get(client_order_id=cid)
    assert (order.actor_label, order.source) == (superuser.username, "admin")
    wait_for(
        lambda: OrderEvent.objects.filter(order__client_order_id="agent-held", status="filled").exists(),
        message="approved order filled",
    )
    assert trading_halted()


def test_a_refresh_held_back_while_the_operator_was_busy_runs_when_they_are_done(server, superuser, trade_key):
    """A list with a row ticked, or the dashboard with a reject reason typed, skips the refresh an event
    asks for (so the tick or the reason is not lost). Unticking the row or clearing the reason left the
    page as it was, an order placed meanwhile missing and the counts stale, until some other event came."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM_PATH)")
    url, port = server
    expect = sync_api.expect

    def place(cid: str) -> None:
        body = {"client_order_id": cid, "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}
        status, held = _http(port, trade_key, "POST", "/api/v1/orders/", body)
        assert status == 201 and held["status"] == "pending_approval", held

    def place_unseen(page, cid: str) -> None:
        """Place an order and wait until the page has received its event (and held back the refresh)."""
        seen = page.evaluate("window.ibkrgwConsole.events")
        place(cid)
        page.wait_for_function(f"window.ibkrgwConsole.events > {seen}", timeout=WAIT_MS)
        page.wait_for_timeout(500)  # past the refresh's own 200 ms debounce: it looked, and held back

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(f"{url}/admin/login/?next=/admin/orders/order/")
            page.fill("#id_username", superuser.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            expect(page.locator("#ibkrgw-stream-state")).to_have_text("live", timeout=WAIT_MS)

            # -- the order list: a row ticked, an order arrives, the row unticked
            place("busy-a")
            row = page.locator("#result_list tr", has_text="busy-a")
            expect(row).to_be_visible(timeout=WAIT_MS)
            row.locator("input.action-select").check()
            place_unseen(page, "busy-b")
            expect(page.locator("#result_list")).not_to_contain_text("busy-b")  # held back: a row is ticked
            page.locator("#result_list tr", has_text="busy-a").locator("input.action-select").uncheck()
            expect(page.locator("#result_list")).to_contain_text("busy-b", timeout=WAIT_MS)

            # -- the dashboard: a reject reason typed, an order arrives, the reason cleared
            page.goto(f"{url}/admin/dashboard/")
            expect(page.locator("#ibkrgw-stream-state")).to_have_text("live", timeout=WAIT_MS)
            reason = page.locator("#ibkrgw-approvals tr", has_text="busy-a").locator("input[name=reason]")
            reason.fill("too large")
            page.locator("h1").first.click()  # focus elsewhere; the typed reason still holds the refresh back
            place_unseen(page, "busy-c")
            expect(page.locator("#ibkrgw-approvals")).not_to_contain_text("busy-c")
            reason.fill("")
            page.locator("h1").first.click()  # done with it
            expect(page.locator("#ibkrgw-approvals")).to_contain_text("busy-c", timeout=WAIT_MS)
        finally:
            browser.close()
