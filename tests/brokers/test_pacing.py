"""IB's message budget with urgent messages first, against the simulated gateway over TCP."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async import IB, LimitOrder, Stock

from brokers.ib import pacing


def _connected(port: int) -> IB:
    ib = pacing.orders_first(IB())
    ib.connect("127.0.0.1", port, clientId=31, timeout=10)
    return ib


def _queue_reads(ib: IB, contract, n: int) -> None:
    for _ in range(n):
        ticker = ib.reqMktData(contract)
        ib.cancelMktData(ticker.contract)


def _until(ib: IB, done, timeout: float = 15.0) -> None:
    waited = 0.0
    while not done() and waited < timeout:
        ib.sleep(0.05)
        waited += 0.05
    assert done()


@pytest.fixture
def resting(sim_gateway):
    """(client, SPY, AAPL): a pacing client on a gateway whose AAPL stays at 190 (buys at 181 rest)."""
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    ib = _connected(sim_gateway.port)
    try:
        [spy] = ib.qualifyContracts(Stock("SPY", "SMART", "USD"))
        [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        yield ib, spy, aapl
    finally:
        ib.disconnect()


def test_urgent_messages_overtake_queued_reads_and_keep_their_own_order(resting, sim_gateway):
    ib, spy, aapl = resting
    _queue_reads(ib, spy, 300)  # 600 messages: over 13 s of IB's 45 a second
    with pacing.urgent():
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 181.0))
        ib.cancelOrder(trade.order)  # sent after the order, so it finds the order at the broker
    _until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert [c.order_id for c in sim_gateway.received_cancels()] == [trade.order.orderId]
    assert len(ib.client._msgQ) > 300  # the reads queued first are still waiting their turn


def test_without_urgency_the_queue_is_first_in_first_out(sim_gateway):
    ib = _connected(sim_gateway.port)
    try:
        [spy] = ib.qualifyContracts(Stock("SPY", "SMART", "USD"))
        _queue_reads(ib, spy, 100)
        [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))  # waits for the 200 reads before it
        assert aapl.conId
        assert len(ib.client._msgQ) < 45  # it went out last
    finally:
        ib.disconnect()


def test_the_kill_switchs_global_cancel_goes_out_ahead_of_everything_queued(resting, sim_gateway):
    ib, spy, aapl = resting
    working = ib.placeOrder(aapl, LimitOrder("BUY", 1, 181.0))
    _until(ib, lambda: working.orderStatus.status == "Submitted")
    _queue_reads(ib, spy, 300)  # over 13 s of IB's budget
    with pacing.urgent():
        queued = ib.placeOrder(aapl, LimitOrder("BUY", 2, 181.0))  # first in line, but the budget is spent
    with pacing.immediately():
        ib.reqGlobalCancel()
    _until(ib, lambda: working.orderStatus.status == "Cancelled")
    assert queued.orderStatus.status == "PendingSubmit" and len(ib.client._msgQ) > 500  # all of it still waits
    assert [o.total_quantity for o in sim_gateway.received_orders()] == [Decimal(1)]


def test_queued_new_orders_are_taken_back_and_urgent_messages_still_go_first(resting, sim_gateway):
    ib, spy, aapl = resting
    _queue_reads(ib, spy, 300)
    with pacing.urgent():
        taken_back = [ib.placeOrder(aapl, LimitOrder("BUY", 5, 181.0)) for _ in range(3)]
    ids = {t.order.orderId for t in taken_back}
    assert sorted(pacing.withdraw_queued_orders(ib, lambda order_id, _queued: order_id in ids)) == sorted(ids)
    with pacing.urgent():
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 181.0))
        ib.cancelOrder(trade.order)
    _until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert [o.total_quantity for o in sim_gateway.received_orders()] == [Decimal(1)]  # none of the three
    assert len(ib.client._msgQ) > 300  # ahead of the reads


def test_an_order_is_taken_back_with_its_queued_change_and_cancel(resting, sim_gateway):
    ib, spy, aapl = resting
    _queue_reads(ib, spy, 300)
    with pacing.urgent():
        changed = ib.placeOrder(aapl, LimitOrder("BUY", 5, 181.0))
        changed.order.lmtPrice = 182.0
        ib.placeOrder(aapl, changed.order)  # its modification, queued behind it
        cancelled = ib.placeOrder(aapl, LimitOrder("BUY", 6, 181.0))
        ib.cancelOrder(cancelled.order)
    queued: dict[int, int] = {}

    def unsent(order_id: int, places: int) -> bool:
        queued[order_id] = places
        return True

    taken = pacing.withdraw_queued_orders(ib, unsent)
    assert sorted(taken) == sorted([changed.order.orderId, cancelled.order.orderId])
    assert queued == {changed.order.orderId: 2, cancelled.order.orderId: 1}  # placements and modifications
    with pacing.urgent():
        trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 181.0))
        ib.cancelOrder(trade.order)
    _until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert [o.total_quantity for o in sim_gateway.received_orders()] == [Decimal(1)]
    assert [c.order_id for c in sim_gateway.received_cancels()] == [trade.order.orderId]  # not the taken one's
    assert len(ib.client._msgQ) > 300  # the next urgent ones still went ahead of the reads


def test_global_cancels_in_a_row_go_over_the_budget_once_and_then_first_in_line(sim_gateway):
    """A halt repeated in a hurry (a script calling it in a loop) must not take the connection over
    IB's 50 messages a second, which disconnects: one goes out over the budget, the rest wait first."""
    ib = _connected(sim_gateway.port)
    client = ib.client
    try:
        [spy] = ib.qualifyContracts(Stock("SPY", "SMART", "USD"))
        _queue_reads(ib, spy, 300)  # this second's budget is spent
        in_last_second = []
        for _ in range(5):
            with pacing.immediately():
                ib.reqGlobalCancel()
            now = client._timeQ[-1]
            in_last_second.append(len([t for t in client._timeQ if now - t <= client.RequestsInterval]))
        assert max(in_last_second) <= client.MaxRequests + 1
        _until(ib, lambda: len([c for c in sim_gateway.received_cancels() if c.order_id is None]) == 5)
        assert len(client._msgQ) > 300  # all five went ahead of the reads
    finally:
        ib.disconnect()


def test_a_task_dropped_unfinished_and_closed_from_elsewhere_leaves_no_error():
    """An order's task abandoned mid-send (a shutdown) is closed by the garbage collector in another context."""
    import contextvars

    class Pending:
        def __await__(self):
            yield  # suspends the task, which is dropped here

    async def sending() -> None:
        with pacing.urgent():
            await Pending()

    task = sending()
    contextvars.copy_context().run(task.send, None)  # started in one context...
    assert pacing._urgent.get() is False
    task.close()  # ...closed in this one, without an error
    assert pacing._urgent.get() is False
