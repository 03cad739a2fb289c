"""With trading_hours="exchange" the simulated market opens and closes on the exchange calendars."""

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ib_async import IB, MarketOrder, Stock

from brokers.sim.server import SimGateway

SATURDAY = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
TUESDAY_MIDDAY = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


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
    gw, now = clocked_sim
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=31, timeout=5)
    try:
        (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 5))
        assert _wait(ib, lambda: trade.orderStatus.status == "Submitted")
        gw.set_price("AAPL", Decimal("190.00"))  # an evaluation while closed: still nothing
        assert not _wait(ib, lambda: trade.orderStatus.status == "Filled", timeout=1.0)
        assert gw.positions().get(aapl.conId, Decimal(0)) == 0
        now["t"] = TUESDAY_MIDDAY
        gw.set_price("AAPL", Decimal("190.00"))
        assert _wait(ib, lambda: trade.orderStatus.status == "Filled")
        assert gw.positions()[aapl.conId] == Decimal(5)
    finally:
        ib.disconnect()


def test_outside_rth_orders_fill_while_closed(clocked_sim):
    gw, _ = clocked_sim
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=32, timeout=5)
    try:
        (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        order = MarketOrder("BUY", 2)
        order.outsideRth = True
        trade = ib.placeOrder(aapl, order)
        assert _wait(ib, lambda: trade.orderStatus.status == "Filled")
    finally:
        ib.disconnect()


def test_the_default_simulated_market_never_closes():
    assert SimGateway(port=0).engine.session_open is None
