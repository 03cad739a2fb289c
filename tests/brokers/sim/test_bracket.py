"""Bracket orders (parent + take-profit + stop-loss in an OCA group), as ib_async's bracketOrder sends them."""

import time
from decimal import Decimal

from ib_async import IB, Stock

from brokers.sim.server import SimGateway


def _wait(ib: IB, predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        ib.waitOnUpdate(timeout=0.1)
    return predicate()


def test_bracket_children_wait_for_the_parent_and_cancel_each_other():
    gw = SimGateway(port=0, trading_hours="always").start()
    gw.pause_market()
    gw.set_price("AAPL", Decimal("190.00"))
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=41, timeout=5)
    try:
        (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        parent, take_profit, stop_loss = ib.bracketOrder("BUY", 10, 185.0, 195.0, 180.0)
        trades = [ib.placeOrder(aapl, o) for o in (parent, take_profit, stop_loss)]
        # Nothing fills while the entry rests; the exits are not active yet.
        assert _wait(ib, lambda: trades[0].orderStatus.status == "Submitted")
        assert {t.orderStatus.status for t in trades[1:]} == {"PreSubmitted"}
        gw.set_price("AAPL", Decimal("184.50"))  # entry fills; both exits become active
        assert _wait(ib, lambda: trades[0].orderStatus.status == "Filled")
        assert _wait(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades[1:]))
        gw.set_price("AAPL", Decimal("195.50"))  # take-profit fills; the stop is cancelled (OCA)
        assert _wait(ib, lambda: trades[1].orderStatus.status == "Filled")
        assert _wait(ib, lambda: trades[2].orderStatus.status == "Cancelled")
        assert gw.positions().get(aapl.conId, Decimal(0)) == 0
    finally:
        ib.disconnect()
        gw.stop()


def test_cancelling_the_parent_cancels_its_children():
    gw = SimGateway(port=0, trading_hours="always").start()
    gw.pause_market()
    gw.set_price("AAPL", Decimal("190.00"))
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=42, timeout=5)
    try:
        (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        trades = [ib.placeOrder(aapl, o) for o in ib.bracketOrder("BUY", 5, 185.0, 195.0, 180.0)]
        assert _wait(ib, lambda: trades[0].orderStatus.status == "Submitted")
        ib.cancelOrder(trades[0].order)
        assert _wait(ib, lambda: all(t.orderStatus.status == "Cancelled" for t in trades))
    finally:
        ib.disconnect()
        gw.stop()
