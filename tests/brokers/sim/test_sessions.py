from __future__ import annotations

from ib_async import LimitOrder, MarketOrder, Stock

from .conftest import wait_until


def test_reconnect_sees_orders_executions_and_ids_continue(gw, connect):
    ib = connect(gw, client_id=9)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    resting = ib.placeOrder(aapl, LimitOrder("BUY", 5, 150.00, orderRef="rest"))
    filled = ib.placeOrder(aapl, MarketOrder("BUY", 5, orderRef="done"))
    wait_until(
        ib,
        lambda: (
            resting.orderStatus.status == "Submitted"
            and filled.isDone()
            and filled.fills
            and filled.fills[0].commissionReport.execId
        ),
    )
    last_id = max(resting.order.orderId, filled.order.orderId)
    ib.disconnect()

    ib2 = connect(gw, client_id=9)
    assert ib2.client.getReqId() > last_id  # nextValidId continues across reconnects
    open_trades = ib2.openTrades()
    assert [(t.order.orderId, t.order.orderRef, t.orderStatus.status) for t in open_trades] == [
        (resting.order.orderId, "rest", "Submitted")
    ]
    assert [f.execution.orderRef for f in ib2.fills()] == ["done"]
    assert ib2.fills()[0].commissionReport.commission == 1.0
    completed = ib2.reqCompletedOrders(apiOnly=True)
    assert [(t.order.permId, t.orderStatus.status) for t in completed] == [(filled.order.permId, "Filled")]
    assert {p.contract.conId: p.position for p in ib2.positions()} == {265598: 5}
    # the resting order is still controllable from the new session
    ib2.cancelOrder(open_trades[0].order)
    wait_until(ib2, lambda: open_trades[0].orderStatus.status == "Cancelled")


def test_master_client_receives_other_clients_orders(sim_gateway_factory, connect):
    gw = sim_gateway_factory(master_client_id=99, tick_interval=0.05)
    gw.pause_market()
    master = connect(gw, client_id=99)
    trader = connect(gw, client_id=3)
    other = connect(gw, client_id=4)
    [aapl] = trader.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    trade = trader.placeOrder(aapl, MarketOrder("BUY", 10))
    wait_until(trader, lambda: trade.isDone())
    wait_until(
        master,
        lambda: any(
            t.order.orderId == trade.order.orderId and t.orderStatus.status == "Filled" for t in master.trades()
        ),
    )
    [seen] = [t for t in master.trades() if t.order.orderId == trade.order.orderId]
    assert seen.order.clientId == 3
    wait_until(master, lambda: len(master.fills()) == 1)
    other.sleep(0.1)
    assert other.trades() == [] and other.fills() == []
    assert gw.connected_client_ids() == {99, 3, 4}


def test_all_open_orders_across_clients(gw, connect):
    a, b = connect(gw, client_id=1), connect(gw, client_id=2)
    [aapl] = a.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    t = a.placeOrder(aapl, LimitOrder("BUY", 1, 100.0))
    wait_until(a, lambda: t.orderStatus.status == "Submitted")
    assert b.reqOpenOrders() == []
    assert [x.order.clientId for x in b.reqAllOpenOrders()] == [1]


def test_client_zero_auto_open_orders(gw, connect):
    ib = connect(gw, client_id=0)
    assert ib.isConnected() and 0 in gw.connected_client_ids()
