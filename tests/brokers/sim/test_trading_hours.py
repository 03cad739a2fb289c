"""With trading_hours="exchange" the simulated market opens and closes on the exchange calendars."""

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Stock

from brokers.sim.server import SimGateway

SATURDAY = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
TUESDAY_MIDDAY = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
TUESDAY_PREMARKET = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # 07:00 New York


@pytest.fixture
def clocked_sim():
    now = {"t": SATURDAY}
    gw = SimGateway(port=0, trading_hours="exchange", clock=lambda: now["t"]).start()
    gw.pause_market()
    yield gw, now
    gw.stop()


def _wait(ib: IB, predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        ib.waitOnUpdate(timeout=0.1)
    return predicate()


def test_a_market_order_rests_while_the_exchange_is_closed_and_fills_at_the_open(clocked_sim):
    # IB error list, 399: an order accepted outside the session waits, PreSubmitted, for the open.
    gw, now = clocked_sim
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=31, timeout=5)
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    try:
        (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 5))
        assert _wait(ib, lambda: 399 in errors)
        gw.set_price("AAPL", Decimal("190.00"))  # an evaluation while closed: still nothing
        assert not _wait(ib, lambda: trade.orderStatus.status == "Filled", timeout=1.0)
        assert [o.status for o in gw.orders()] == ["PreSubmitted"]
        assert gw.positions().get(aapl.conId, Decimal(0)) == 0
        now["t"] = TUESDAY_MIDDAY
        gw.set_price("AAPL", Decimal("190.00"))
        assert _wait(ib, lambda: trade.orderStatus.status == "Filled")
        assert gw.positions()[aapl.conId] == Decimal(5)
    finally:
        ib.disconnect()


def test_outside_rth_applies_to_limit_orders_in_extended_hours_only(clocked_sim):
    # IB error list, 2109: outsideRth is ignored for market orders, which wait for the regular session;
    # limit orders marked outsideRth trade in the pre-market (04:00-09:30 New York).
    gw, now = clocked_sim
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=32, timeout=5)
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    try:
        (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        gw.set_price("AAPL", Decimal("190.00"))
        now["t"] = TUESDAY_PREMARKET
        market = MarketOrder("BUY", 2)
        market.outsideRth = True
        mkt_trade = ib.placeOrder(aapl, market)
        assert _wait(ib, lambda: 2109 in errors)
        limit = ib.placeOrder(aapl, LimitOrder("BUY", 3, 191.00, outsideRth=True))
        plain = ib.placeOrder(aapl, LimitOrder("BUY", 4, 191.00))
        assert _wait(ib, lambda: limit.orderStatus.status == "Filled")
        assert not _wait(ib, lambda: mkt_trade.orderStatus.status == "Filled" or plain.isDone(), timeout=1.0)
        now["t"] = SATURDAY  # outside the extended session too: an outsideRth limit order waits
        weekend = ib.placeOrder(aapl, LimitOrder("BUY", 1, 191.00, outsideRth=True))
        assert not _wait(ib, lambda: weekend.orderStatus.status == "Filled", timeout=1.0)
    finally:
        ib.disconnect()


def test_the_default_simulated_market_follows_exchange_hours():
    assert SimGateway(port=0).engine.sessions is not None
    assert SimGateway(port=0, trading_hours="always").engine.sessions is None
