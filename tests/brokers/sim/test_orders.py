from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async import Contract, LimitOrder, MarketOrder, Order, Stock, StopLimitOrder, StopOrder

from .conftest import wait_until


@pytest.fixture
def ib(gw, connect):
    return connect(gw, client_id=1)


@pytest.fixture
def aapl(ib):
    [c] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    return c


def test_market_order_fill_with_commission(gw, ib, aapl):
    ask = float(gw.quote("AAPL")["ask"])
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 100, orderRef="ref-mkt"))
    wait_until(ib, lambda: trade.isDone() and trade.fills and trade.fills[0].commissionReport.commission)
    assert trade.orderStatus.status == "Filled" and trade.orderStatus.avgFillPrice == ask
    [fill] = trade.fills
    assert fill.execution.shares == 100 and fill.execution.price == ask and fill.execution.side == "BOT"
    assert fill.execution.orderRef == "ref-mkt" and fill.execution.acctNumber == "DU1234567"
    assert fill.commissionReport.commission == 1.0 and fill.commissionReport.currency == "USD"
    assert fill.execution.time.tzinfo is not None
    assert [e.message for e in trade.log if e.status == "Submitted"]
    [ex] = gw.executions()
    assert ex.commission == Decimal("1.00") and ex.order_ref == "ref-mkt"
    assert gw.positions()[265598] == 100


def test_limit_rests_then_fills_when_price_crosses(gw, ib, aapl):
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 185.00))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    assert trade.orderStatus.remaining == 10 and not trade.fills
    gw.set_price("AAPL", "184.50")
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    assert trade.orderStatus.avgFillPrice <= 185.00
    [state] = [o for o in gw.orders() if o.order_id == trade.order.orderId]
    assert state.status == "Filled" and state.filled == 10 and state.remaining == 0


def test_stop_and_stop_limit_trigger(gw, ib, aapl):
    stop = ib.placeOrder(aapl, StopOrder("SELL", 5, 180.00))
    stop_lmt = ib.placeOrder(aapl, StopLimitOrder("BUY", 5, 200.10, 200.00))
    wait_until(ib, lambda: stop.orderStatus.status == "Submitted" and stop_lmt.orderStatus.status == "Submitted")
    gw.set_price("AAPL", "200.05")
    wait_until(ib, lambda: stop_lmt.orderStatus.status == "Filled")
    assert stop_lmt.orderStatus.avgFillPrice <= 200.10 and stop.orderStatus.status == "Submitted"
    gw.set_price("AAPL", "179.90")
    wait_until(ib, lambda: stop.orderStatus.status == "Filled")
    assert stop.orderStatus.avgFillPrice == 179.90
    assert gw.positions().get(265598, 0) == 0


def test_trailing_stop(gw, ib, aapl):
    o = Order(action="SELL", totalQuantity=3, orderType="TRAIL", auxPrice=2.0)
    trade = ib.placeOrder(aapl, o)
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    gw.set_price("AAPL", "195.00")  # stop trails up to 193
    gw.set_price("AAPL", "193.50")
    assert trade.orderStatus.status == "Submitted"
    gw.set_price("AAPL", "192.90")
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")


def test_cancel_and_modify(gw, ib, aapl):
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 150.00, orderRef="keep-me"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    trade.order.lmtPrice = 151.00
    trade.order.totalQuantity = 20
    ib.placeOrder(aapl, trade.order)
    wait_until(ib, lambda: trade.orderStatus.remaining == 20, what="modify acknowledged")
    [state] = [o for o in gw.orders() if o.order_id == trade.order.orderId]
    assert state.total_quantity == 20 and state.order_ref == "keep-me"
    mods = [r for r in gw.received_orders() if r.order_id == trade.order.orderId]
    assert [r.lmt_price for r in mods] == [Decimal("150.0"), Decimal("151.0")]
    assert mods[0].perm_id == mods[1].perm_id is not None
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert [c.order_id for c in gw.received_cancels()] == [trade.order.orderId]
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    ib.client.cancelOrder(trade.order.orderId)
    wait_until(ib, lambda: 10148 in errors)


def test_a_held_order_is_transmitted_when_re_placed_with_transmit(gw, ib, aapl):
    order = LimitOrder("BUY", 10, 150.00, transmit=False)
    trade = ib.placeOrder(aapl, order)
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted", what="held")
    order.transmit = True
    ib.placeOrder(aapl, order)
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", what="transmitted")


def test_modifying_side_contract_or_type_is_refused_and_a_filled_order_cannot_be_modified(gw, ib, aapl):
    [msft] = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 150.00))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    oid = trade.order.orderId
    for contract, order in (
        (aapl, LimitOrder("SELL", 10, 150.00, orderId=oid)),
        (msft, LimitOrder("BUY", 10, 150.00, orderId=oid)),
        (aapl, StopOrder("BUY", 10, 250.00, orderId=oid)),
    ):
        ib.client.placeOrder(oid, contract, order)
    wait_until(ib, lambda: errors.count((oid, 105)) == 3, what="three 105s")
    [state] = [o for o in gw.orders() if o.order_id == oid]
    assert (state.con_id, state.action, state.order_type, state.status) == (aapl.conId, "BUY", "LMT", "Submitted")
    filled = ib.placeOrder(aapl, MarketOrder("BUY", 10))
    wait_until(ib, lambda: filled.orderStatus.status == "Filled")
    filled.order.totalQuantity = 20
    ib.client.placeOrder(filled.order.orderId, aapl, filled.order)
    wait_until(ib, lambda: (filled.order.orderId, 104) in errors, what="104")
    assert [o.total_quantity for o in gw.orders() if o.order_id == filled.order.orderId] == [10]


def test_partial_fills_sum_up(gw, ib, aapl):
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1200))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", timeout=10)
    wait_until(ib, lambda: len(trade.fills) == 3 and all(f.commissionReport.execId for f in trade.fills))
    assert [f.execution.shares for f in trade.fills] == [500, 500, 200]
    assert sum(f.execution.shares for f in trade.fills) == 1200
    assert trade.fills[-1].execution.cumQty == 1200
    assert gw.positions()[265598] == 1200


def test_ioc_and_fok(gw, ib, aapl):
    ioc = ib.placeOrder(aapl, MarketOrder("BUY", 800, tif="IOC"))
    wait_until(ib, lambda: ioc.orderStatus.status == "Cancelled")
    assert ioc.orderStatus.filled == 500 and sum(f.execution.shares for f in ioc.fills) == 500
    far = ib.placeOrder(aapl, LimitOrder("BUY", 10, 100.00, tif="IOC"))
    wait_until(ib, lambda: far.orderStatus.status == "Cancelled")
    assert not far.fills
    fok = ib.placeOrder(aapl, MarketOrder("BUY", 800, tif="FOK"))
    wait_until(ib, lambda: fok.orderStatus.status == "Cancelled")
    assert not fok.fills
    fok_ok = ib.placeOrder(aapl, MarketOrder("BUY", 100, tif="FOK"))
    wait_until(ib, lambda: fok_ok.orderStatus.status == "Filled")


def test_global_cancel(gw, ib, aapl):
    trades = [ib.placeOrder(aapl, LimitOrder("BUY", 1, 100.00 + i)) for i in range(3)]
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    ib.reqGlobalCancel()
    wait_until(ib, lambda: all(t.orderStatus.status == "Cancelled" for t in trades))
    assert gw.received_cancels()[-1].order_id is None
    assert all(o.status == "Cancelled" for o in gw.orders())


def test_what_if(gw, ib, aapl):
    state = ib.whatIfOrder(aapl, LimitOrder("BUY", 100, 190.00))
    assert state.status == "PreSubmitted"
    # Reg-T style stock margin: 50% initial, 25% maintenance of the position's value at the limit.
    assert float(state.initMarginChange) == pytest.approx(100 * 190 * 0.50)
    assert float(state.maintMarginChange) == pytest.approx(100 * 190 * 0.25)
    assert float(state.equityWithLoanAfter) > 0 and state.commission == 1.0
    assert gw.orders() == [] and ib.openTrades() == []
    [rec] = gw.received_orders()
    assert rec.what_if and rec.perm_id is None and rec.total_quantity == 100


def test_moc_fills_at_simulated_close(gw, ib, aapl):
    trade = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=50, orderType="MOC"))
    loc = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=50, orderType="LOC", lmtPrice=150.0))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted" and loc.orderStatus.status == "Submitted")
    gw.set_price("AAPL", "188.88")
    assert trade.orderStatus.status == "Submitted"
    gw.market_close()
    wait_until(ib, lambda: trade.orderStatus.status == "Filled" and loc.orderStatus.status == "Cancelled")
    assert trade.orderStatus.avgFillPrice == 188.88


def test_rejections(gw, ib, aapl):
    errors = {}
    ib.errorEvent += lambda req_id, code, msg, contract: errors.setdefault(req_id, code)
    zero = ib.placeOrder(aapl, MarketOrder("BUY", 0))
    bad_type = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="BOGUS"))
    unknown = ib.placeOrder(Contract(conId=999999999, exchange="SMART"), MarketOrder("BUY", 1))
    wait_until(ib, lambda: len(errors) == 3)
    # IB error list: 434 "The order size cannot be zero"; 201 for an order type IB does not know.
    assert errors[zero.order.orderId] == 434 and errors[bad_type.order.orderId] == 201
    assert errors[unknown.order.orderId] == 200
    # TWS reports rejects as orderStatus Inactive + the error; unknown contracts just get 200.
    # (ib_async files 434 among its warnings and shows such an order as ValidationError.)
    assert bad_type.orderStatus.status == "Inactive" and zero.orderStatus.status in ("Inactive", "ValidationError")
    assert unknown.orderStatus.status == "Cancelled"
    assert {o.status for o in gw.orders()} == {"Inactive"}


def test_duplicate_order_id_is_103(gw, ib, aapl):
    # The id of a cancelled order (a filled one gets 104, see above).
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150.00))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: trade.isDone())
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    ib.client.placeOrder(trade.order.orderId, aapl, MarketOrder("BUY", 1))
    wait_until(ib, lambda: (trade.order.orderId, 103) in errors)
    assert not gw.executions()


def test_received_orders_record_everything(gw, ib, aapl):
    t = ib.placeOrder(aapl, LimitOrder("SELL", 7, 250.00, orderRef="abc", outsideRth=True, tif="GTC"))
    wait_until(ib, lambda: t.orderStatus.status == "Submitted")
    [rec] = gw.received_orders()
    assert (rec.client_id, rec.order_id, rec.con_id, rec.symbol, rec.sec_type) == (
        1,
        t.order.orderId,
        265598,
        "AAPL",
        "STK",
    )
    assert (rec.action, rec.total_quantity, rec.order_type, rec.lmt_price, rec.aux_price) == (
        "SELL",
        Decimal(7),
        "LMT",
        Decimal("250.0"),
        None,
    )
    assert (rec.tif, rec.order_ref, rec.outside_rth, rec.what_if) == ("GTC", "abc", True, False)
    assert rec.perm_id == t.orderStatus.permId and rec.received_at.tzinfo is not None
    assert t.order.orderRef == "abc"
    [open_trade] = ib.reqOpenOrders()
    assert open_trade.order.orderRef == "abc" and open_trade.order.tif == "GTC"


def test_a_gateway_started_again_never_repeats_an_execution_id(sim_gateway_factory, connect):
    # IB's execution ids are unique; clients deduplicate fills by them. A gateway restarted with the same
    # seed starts from an empty book and the same order and permanent ids, but new execution ids.
    exec_ids = []
    for _ in range(2):
        gateway = sim_gateway_factory(seed=7)
        ib = connect(gateway, client_id=1)
        [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
        wait_until(ib, lambda t=trade: t.fills)
        exec_ids.append(trade.fills[0].execution.execId)
        ib.disconnect()
        gateway.stop()
    assert exec_ids[0] != exec_ids[1]


def test_oca_type_1_cancels_the_group_and_types_2_and_3_reduce_it(gw, ib, aapl, connect):
    # TWS API Order.ocaType: 1 cancels the rest of the group at a fill; 2 (with block) and 3 (without)
    # reduce the other orders of the group by the quantity filled; one reduced to nothing is cancelled.
    cancel_first = ib.placeOrder(aapl, LimitOrder("BUY", 300, 185.00, ocaGroup="one", ocaType=1))
    cancel_rest = ib.placeOrder(aapl, LimitOrder("BUY", 800, 180.00, ocaGroup="one", ocaType=1))
    reduce_first = ib.placeOrder(aapl, LimitOrder("BUY", 300, 185.00, ocaGroup="two", ocaType=2))
    reduced = ib.placeOrder(aapl, LimitOrder("BUY", 800, 180.00, ocaGroup="two", ocaType=2))
    emptied = ib.placeOrder(aapl, LimitOrder("BUY", 300, 179.00, ocaGroup="two", ocaType=2))
    trades = [cancel_first, cancel_rest, reduce_first, reduced, emptied]
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    watcher = connect(gw, client_id=2)
    assert {t.order.orderId: t.order.ocaType for t in watcher.reqAllOpenOrders()} == {
        t.order.orderId: t.order.ocaType for t in trades
    }
    gw.set_price("AAPL", "184.50")
    wait_until(ib, lambda: cancel_first.orderStatus.status == "Filled" and reduce_first.orderStatus.status == "Filled")
    wait_until(ib, lambda: cancel_rest.orderStatus.status == "Cancelled" and emptied.orderStatus.status == "Cancelled")
    wait_until(ib, lambda: reduced.orderStatus.remaining == 500)
    assert reduced.orderStatus.status == "Submitted" and reduced.order.totalQuantity == 500
    [still_open] = watcher.reqAllOpenOrders()
    assert still_open.order.orderId == reduced.order.orderId
    assert (still_open.order.totalQuantity, still_open.order.ocaGroup, still_open.order.ocaType) == (500, "two", 2)
    gw.set_price("AAPL", "179.50")
    wait_until(ib, lambda: reduced.orderStatus.status == "Filled")
    assert reduced.orderStatus.filled == 500
    assert gw.positions()[265598] == 300 + 300 + 500


def test_oca_type_3_reduces_the_group_and_no_order_is_overfilled(gw, ib, aapl):
    big = ib.placeOrder(aapl, LimitOrder("BUY", 400, 185.00, ocaGroup="three", ocaType=3))
    small = ib.placeOrder(aapl, LimitOrder("BUY", 600, 184.00, ocaGroup="three", ocaType=3))
    wait_until(ib, lambda: big.orderStatus.status == "Submitted" and small.orderStatus.status == "Submitted")
    gw.set_price("AAPL", "183.00")  # both marketable: the group as a whole buys no more than 600
    wait_until(ib, lambda: big.isDone() and small.isDone())
    assert big.orderStatus.filled + small.orderStatus.filled == 600
