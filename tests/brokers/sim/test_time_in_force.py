"""Time in force: GTD orders expire at their goodTillDate, DAY orders at the end of their session.

The gateway's clock is the test's (``clock=``): time moves only when a test moves it, and the gateway's
next evaluation (every tick) cancels what has expired.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ib_async import LimitOrder, MarketOrder, Stock

from .conftest import wait_until

TUESDAY_MIDDAY = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # 12:00 New York
AFTER_TUESDAY_CLOSE = datetime(2026, 11, 24, 21, 1, tzinfo=UTC)  # 16:01 New York
AFTER_TUESDAY_EXTENDED = datetime(2026, 11, 25, 1, 1, tzinfo=UTC)  # 20:01 New York


def _clocked(sim_gateway_factory, trading_hours: str):
    now = {"t": TUESDAY_MIDDAY}
    gw = sim_gateway_factory(trading_hours=trading_hours, clock=lambda: now["t"], tick_interval=0.05)
    gw.pause_market()
    gw.set_price("AAPL", Decimal("190.00"))
    return gw, now


@pytest.fixture
def always(sim_gateway_factory):
    return _clocked(sim_gateway_factory, "always")


@pytest.fixture
def exchange(sim_gateway_factory):
    return _clocked(sim_gateway_factory, "exchange")


def test_a_gtd_order_is_cancelled_when_its_date_passes_and_openorder_echoes_it(always, connect):
    gw, now = always
    ib = connect(gw, client_id=1)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    eastern = LimitOrder("BUY", 1, 150.00, tif="GTD", goodTillDate="20261124 13:00:00 US/Eastern")  # 18:00 UTC
    utc = LimitOrder("BUY", 1, 150.00, tif="GTD", goodTillDate="20261124-19:00:00")
    day = LimitOrder("BUY", 1, 150.00, tif="DAY")
    trades = [ib.placeOrder(aapl, o) for o in (eastern, utc, day)]
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    watcher = connect(gw, client_id=2)
    echoed = {t.order.orderId: (t.order.tif, t.order.goodTillDate) for t in watcher.reqAllOpenOrders()}
    assert echoed == {t.order.orderId: (t.order.tif, t.order.goodTillDate) for t in trades}
    now["t"] = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    wait_until(ib, lambda: trades[0].orderStatus.status == "Cancelled")
    assert trades[1].orderStatus.status == "Submitted"
    now["t"] += timedelta(days=3)  # with trading hours "always" a DAY order never expires
    wait_until(ib, lambda: trades[1].orderStatus.status == "Cancelled")
    gw.set_price("AAPL", "190.00")  # an evaluation after the clock moved
    assert trades[2].orderStatus.status == "Submitted"
    assert {o.order_id: o.status for o in gw.orders()}[day.orderId] == "Submitted"


def test_a_gtd_order_whose_date_has_passed_is_cancelled_at_once(always, connect):
    gw, _ = always
    ib = connect(gw, client_id=1)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1, tif="GTD", goodTillDate="20261124 11:00:00 US/Eastern"))
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert (trade.order.orderId, 202) in errors
    assert not trade.fills and not gw.executions() and not gw.positions()


def test_an_unreadable_good_till_date_is_rejected(always, connect):
    gw, _ = always
    ib = connect(gw, client_id=1)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150.00, tif="GTD", goodTillDate="next tuesday"))
    wait_until(ib, lambda: (trade.order.orderId, 201) in errors)
    assert [o.status for o in gw.orders()] == ["Inactive"]


def test_day_orders_expire_at_the_end_of_their_session_with_exchange_hours(exchange, connect):
    gw, now = exchange
    ib = connect(gw, client_id=1)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    day = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150.00))
    extended = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150.00, outsideRth=True))
    gtc = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150.00, tif="GTC"))
    trades = [day, extended, gtc]
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    now["t"] = AFTER_TUESDAY_CLOSE  # the regular session is over: the DAY order with it
    wait_until(ib, lambda: day.orderStatus.status == "Cancelled")
    assert extended.orderStatus.status == "Submitted"  # outsideRth: its day ends with the extended session
    now["t"] = AFTER_TUESDAY_EXTENDED
    wait_until(ib, lambda: extended.orderStatus.status == "Cancelled")
    gw.set_price("AAPL", "190.00")
    assert gtc.orderStatus.status == "Submitted"
