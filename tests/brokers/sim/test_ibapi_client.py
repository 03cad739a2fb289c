"""IB's official client (``ibapi`` 9.81, server version 157) driven as its users drive it: an EWrapper whose
callbacks see every message, ticks by tick type. Where the simulator differed from IB here, a program written
against it would have broken against IB Gateway; each test names the IB behaviour it holds the simulator to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from brokers.sim import SimGateway

CLIENT_ID = 31


class Recorder:
    """An ``EClient``/``EWrapper`` app on its own thread that records every callback, in order, as
    (name, args). ``wait(predicate)`` waits for what the test expects; nothing is timed."""

    def __init__(self, port: int, client_id: int = CLIENT_ID) -> None:
        from ibapi.client import EClient
        from ibapi.wrapper import EWrapper

        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.next_id = 0
        outer = self

        def recording(name: str) -> Callable[..., None]:
            def callback(self: Any, *args: Any) -> None:
                with outer.lock:
                    outer.calls.append((name, args))
                if name == "nextValidId":
                    outer.next_id = args[0]
                    outer.ready.set()

            return callback

        names = [n for n, v in vars(EWrapper).items() if callable(v) and not n.startswith("_") and n != "logAnswer"]
        app_class = type("App", (EWrapper, EClient), {n: recording(n) for n in names})
        self.app = app_class.__new__(app_class)
        EClient.__init__(self.app, self.app)
        self.app.connect("127.0.0.1", port, client_id)
        self.thread = threading.Thread(target=self.app.run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5), "ibapi did not get nextValidId"

    def seen(self, name: str, req_id: int | None = None) -> list[tuple[Any, ...]]:
        with self.lock:
            return [a for n, a in self.calls if n == name and (req_id is None or (a and a[0] == req_id))]

    def errors(self, req_id: int | None = None) -> list[tuple[int, str]]:
        return [(a[1], a[2]) for a in self.seen("error", req_id)]

    def wait(self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.app.isConnected(), f"ibapi was disconnected while waiting for {what or predicate}"
            assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
            time.sleep(0.01)

    def barrier(self) -> None:
        """Everything the gateway sent in answer to earlier requests has arrived: it answers in order."""
        before = len(self.seen("currentTime"))
        self.app.reqCurrentTime()
        self.wait(lambda: len(self.seen("currentTime")) > before, what="currentTime")

    def close(self) -> None:
        self.app.disconnect()
        self.thread.join(5)


@pytest.fixture
def sim(sim_gateway_factory: Callable[..., SimGateway]) -> SimGateway:
    g = sim_gateway_factory(tick_interval=0.05)
    g.pause_market()
    g.set_price("AAPL", "190.00")
    g.set_price("MSFT", "420.00")
    return g


@pytest.fixture
def app(sim: SimGateway) -> Iterator[Recorder]:
    recorder = Recorder(sim.port)
    yield recorder
    recorder.close()


def stock(symbol: str):  # noqa: ANN201 - ibapi's Contract
    from ibapi.contract import Contract

    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def tick_prices(app: Recorder, req_id: int) -> list[tuple[int, float]]:
    return [(a[1], a[2]) for a in app.seen("tickPrice", req_id)]


LIVE_PRICE_TICKS = {1, 2, 4, 6, 7, 9, 14}
DELAYED_PRICE_TICKS = {66, 67, 68, 72, 73, 75, 76}


def test_a_subscription_keeps_the_market_data_type_it_was_made_with(sim, app):
    # API reference, "Market Data Types": reqMarketDataType switches the type of the market data requested
    # *after* it, and each request's type is announced by marketDataType(reqId, type) (from TWS 970 also 1 for
    # live data). A delayed subscription stays delayed (tick types 66-76) when the client then asks for live data.
    sim.no_live_permission.add("AAPL")  # delayed data is for symbols without a live subscription
    app.app.reqMarketDataType(3)
    app.app.reqMktData(1, stock("AAPL"), "", False, False, [])
    app.wait(lambda: (68, 190.0) in tick_prices(app, 1), what="the delayed last price")
    app.app.reqMarketDataType(1)
    app.app.reqMktData(2, stock("MSFT"), "", False, False, [])
    app.wait(lambda: (4, 420.0) in tick_prices(app, 2), what="the live last price")
    assert app.seen("marketDataType") == [(1, 3), (2, 1)]
    sim.set_price("AAPL", "191.37")
    sim.set_price("MSFT", "421.50")
    app.wait(lambda: (68, 191.37) in tick_prices(app, 1), what="the next delayed last price")
    app.wait(lambda: (4, 421.5) in tick_prices(app, 2), what="the next live last price")
    assert {t for t, _ in tick_prices(app, 1)} <= DELAYED_PRICE_TICKS
    assert {t for t, _ in tick_prices(app, 2)} <= LIVE_PRICE_TICKS


def test_cancelling_market_data_that_is_not_there_gets_300(sim, app):
    # IB error list, 300 "Can't find EId with tickerId": cancelMktData for an id with no subscription: one
    # never made, a snapshot that has ended, one cancelled already. Cancelling a live subscription is silent.
    app.app.reqMktData(5, stock("AAPL"), "", True, False, [])
    app.wait(lambda: app.seen("tickSnapshotEnd", 5), what="the end of the snapshot")
    app.app.reqMktData(6, stock("AAPL"), "", False, False, [])
    app.wait(lambda: tick_prices(app, 6), what="the first ticks")
    for req_id in (5, 6, 6, 7):
        app.app.cancelMktData(req_id)
    app.barrier()
    assert [(a[0], a[1], a[2]) for a in app.seen("error") if a[1] == 300] == [
        (5, 300, "Can't find EId with tickerId:5"),
        (6, 300, "Can't find EId with tickerId:6"),
        (7, 300, "Can't find EId with tickerId:7"),
    ]


def order(action: str, qty: int, order_type: str, lmt: float | None = None):  # noqa: ANN201 - ibapi's Order
    from ibapi.order import Order

    o = Order()
    o.action, o.totalQuantity, o.orderType = action, qty, order_type
    o.eTradeOnly = o.firmQuoteOnly = False  # ibapi 9.81 sets both; current TWS rejects them (10268, 10269)
    if lmt is not None:
        o.lmtPrice = lmt
    return o


def test_open_and_completed_orders_report_prices_an_order_has_not_as_0(sim, app):
    # What TWS sends in openOrder and completedOrder: a market order's lmtPrice and auxPrice are 0, and so is a
    # limit order's auxPrice; ibapi reads an empty or unset price as 1.7976931348623157e308.
    mkt, lmt = app.next_id, app.next_id + 1
    app.app.placeOrder(mkt, stock("AAPL"), order("BUY", 10, "MKT"))
    app.app.placeOrder(lmt, stock("AAPL"), order("BUY", 10, "LMT", 180.0))
    app.wait(lambda: "Filled" in [a[1] for a in app.seen("orderStatus", mkt)], what="the market order's fill")
    app.wait(lambda: "Submitted" in [a[1] for a in app.seen("orderStatus", lmt)], what="the limit order working")
    app.app.reqCompletedOrders(False)
    app.wait(lambda: app.seen("completedOrdersEnd"), what="completed orders")
    reported = {a[0]: a[2] for a in app.seen("openOrder")}
    assert (reported[mkt].lmtPrice, reported[mkt].auxPrice) == (0, 0)
    assert (reported[lmt].lmtPrice, reported[lmt].auxPrice) == (180.0, 0)
    [(_, completed, _)] = app.seen("completedOrder")
    assert (completed.orderType, completed.lmtPrice, completed.auxPrice) == ("MKT", 0, 0)


# The tags IB documents for reqAccountSummary (Reg T spelled as IB reports it: ibapi's AllTags spells it "ReqT",
# a name IB answers with nothing), each answered for the account, as TWS answers a single account's summary.
DOCUMENTED_SUMMARY_TAGS = (
    "AccountType,NetLiquidation,TotalCashValue,SettledCash,AccruedCash,BuyingPower,EquityWithLoanValue,"
    "PreviousDayEquityWithLoanValue,GrossPositionValue,RegTEquity,RegTMargin,SMA,InitMarginReq,MaintMarginReq,"
    "AvailableFunds,ExcessLiquidity,Cushion,FullInitMarginReq,FullMaintMarginReq,FullAvailableFunds,"
    "FullExcessLiquidity,LookAheadNextChange,LookAheadInitMarginReq,LookAheadMaintMarginReq,LookAheadAvailableFunds,"
    "LookAheadExcessLiquidity,HighestSeverity,DayTradesRemaining,DayTradesRemainingT+1,DayTradesRemainingT+2,"
    "DayTradesRemainingT+3,DayTradesRemainingT+4,Leverage"
)


def test_the_account_summary_answers_every_tag_ib_documents(sim, app):
    # API reference, "Account Summary": reqAccountSummary(reqId, group, tags) answers each tag asked for with
    # accountSummary(reqId, account, tag, value, currency), then accountSummaryEnd. A program that reads, say,
    # SMA or LookAheadExcessLiquidity must find it in the answer, not wait for it forever.
    tags = DOCUMENTED_SUMMARY_TAGS.split(",")
    app.app.reqAccountSummary(3, "All", DOCUMENTED_SUMMARY_TAGS)
    app.wait(lambda: app.seen("accountSummaryEnd", 3), what="the end of the account summary")
    rows = {a[2]: (a[1], a[3], a[4]) for a in app.seen("accountSummary", 3)}
    assert sorted(rows) == sorted(tags)
    assert {account for account, _, _ in rows.values()} == {"DU1234567"}
    cash = 1_000_000.0  # nothing traded: settled cash is all the cash, no margin is used
    assert float(rows["SettledCash"][1]) == cash and rows["SettledCash"][2] == "USD"
    assert float(rows["RegTEquity"][1]) == cash and float(rows["RegTMargin"][1]) == 0
    assert float(rows["SMA"][1]) == cash and float(rows["PreviousDayEquityWithLoanValue"][1]) == cash
    assert float(rows["LookAheadExcessLiquidity"][1]) == float(rows["ExcessLiquidity"][1])
    assert float(rows["LookAheadInitMarginReq"][1]) == float(rows["InitMarginReq"][1])
    assert float(rows["Leverage"][1]) == 0 and rows["Leverage"][2] == ""
    app.app.cancelAccountSummary(3)


def forex(pair: str = "EUR"):  # noqa: ANN201 - ibapi's Contract
    from ibapi.contract import Contract

    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = pair, "CASH", "IDEALPRO", "USD"
    return c


NO_FX_TRADES = (
    162,
    "Historical Market Data Service error message:No data of type TRADES is available for the exchange 'IDEALPRO'",
)


def test_a_currency_pair_has_no_trades_in_real_time_bars_or_historical_ticks(sim, app):
    # IB disseminates no trades for cash FX (IDEALPRO quotes, it does not print trades): historical bars, real-time
    # bars and historical ticks of TRADES for a currency pair are refused by the historical data service (162), as
    # the simulator already refused historical bars. A program that streams "TRADES" bars of EUR.USD must learn
    # here that IB will give it none and ask for MIDPOINT (or BID, ASK) instead.
    app.app.reqHistoricalData(1, forex(), "", "1 D", "1 hour", "TRADES", 0, 1, False, [])
    app.app.reqRealTimeBars(2, forex(), 5, "TRADES", False, [])
    app.app.reqHistoricalTicks(3, forex(), "", "20261203 10:00:00 UTC", 10, "TRADES", 0, True, [])
    app.app.reqRealTimeBars(4, forex(), 5, "MIDPOINT", False, [])
    app.app.reqHistoricalTicks(5, forex(), "", "20261203 10:00:00 UTC", 10, "MIDPOINT", 0, True, [])
    app.wait(lambda: app.seen("historicalTicks", 5), what="the midpoint ticks")
    app.barrier()
    assert [app.errors(req_id) for req_id in (1, 2, 3)] == [[NO_FX_TRADES]] * 3
    assert app.errors(4) == [] and app.errors(5) == []
    assert app.seen("historicalTicksLast", 3) == []
    app.app.cancelRealTimeBars(4)


INVALID_ACCOUNT = (321, "Error validating request.-'cq' : cause - Invalid account code")


def test_pnl_for_an_account_the_login_does_not_manage_gets_321(sim, app):
    # IB answers reqPnL and reqPnLSingle naming an account the login does not manage (a typo, another person's
    # account, "All" on a login that is no advisor's) with 321 "Invalid account code", and sends no P&L: a program
    # must not see the managed account's figures under the name it asked for.
    app.app.reqPnL(1, "DU0000000", "")
    app.app.reqPnL(2, "All", "")
    app.app.reqPnLSingle(3, "DU0000000", "", 265598)
    app.app.reqPnL(4, "DU1234567", "")
    app.app.reqPnLSingle(5, "DU1234567", "", 265598)
    app.wait(lambda: app.seen("pnl", 4) and app.seen("pnlSingle", 5), what="the managed account's P&L")
    app.barrier()
    assert [app.errors(req_id) for req_id in (1, 2, 3)] == [[INVALID_ACCOUNT]] * 3
    assert app.seen("pnl", 1) == app.seen("pnl", 2) == app.seen("pnlSingle", 3) == []
    assert app.errors(4) == app.errors(5) == []
    for req_id in (1, 2, 4):
        app.app.cancelPnL(req_id)
    for req_id in (3, 5):
        app.app.cancelPnLSingle(req_id)
    app.barrier()
    assert [e for e in app.errors() if e[0] not in (2104, 2106, 2158)] == [INVALID_ACCOUNT] * 3


MISSING_EXCHANGE = (321, "Error validating request.-'bN' : cause - Missing order exchange.")


def test_an_order_for_a_contract_without_an_exchange_gets_321_and_is_not_placed(sim, app):
    # IB validates an order's routing before anything else: placeOrder for a contract with no exchange (a bare conId,
    # or symbol, secType and currency without SMART) is answered 321 "Missing order exchange" and never works, even
    # when the contract alone is unambiguous. A program that sends such orders here must fail here as it would at IB.
    from ibapi.contract import Contract

    by_con_id = Contract()
    by_con_id.conId = 265598
    no_exchange = stock("AAPL")
    no_exchange.exchange = ""
    first = app.next_id
    app.app.placeOrder(first, by_con_id, order("BUY", 1, "LMT", 180.0))
    app.app.placeOrder(first + 1, no_exchange, order("BUY", 1, "MKT"))
    app.app.placeOrder(first + 2, stock("AAPL"), order("BUY", 1, "LMT", 180.0))
    app.wait(lambda: "Submitted" in [a[1] for a in app.seen("orderStatus", first + 2)], what="the routed order")
    app.barrier()
    assert app.errors(first) == app.errors(first + 1) == [MISSING_EXCHANGE]
    assert [a[0] for a in app.seen("openOrder")] == [first + 2] * len(app.seen("openOrder"))
    assert [r.order_id for r in sim.orders()] == [first + 2]


def test_frozen_data_is_asked_for_but_live_data_is_sent_while_the_market_is_open(sim_gateway_factory):
    # API reference, "Market Data Types": frozen (2) asks for the last quote recorded at the close *when there is
    # no current one*; while the market is open the request gets live data, announced marketDataType(reqId, 1)
    # (delayed-frozen, 4, likewise gets delayed data, 3). Once the market has closed, frozen data is frozen (2).
    from datetime import UTC, datetime

    now = {"t": datetime(2026, 11, 24, 15, 0, tzinfo=UTC)}  # 10:00 New York, a Tuesday: the market is open
    gw = sim_gateway_factory(trading_hours="exchange", clock=lambda: now["t"], tick_interval=0.05)
    gw.pause_market()
    gw.no_live_permission.add("MSFT")
    app = Recorder(gw.port)
    try:
        app.app.reqMarketDataType(2)
        app.app.reqMktData(1, stock("AAPL"), "", False, False, [])
        app.app.reqMarketDataType(4)
        app.app.reqMktData(2, stock("MSFT"), "", False, False, [])
        app.barrier()  # both answered before the clock moves
        now["t"] = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 21:00 New York: closed, after the extended session
        app.app.reqMarketDataType(2)
        app.app.reqMktData(3, stock("AAPL"), "", False, False, [])
        app.barrier()
        assert app.seen("marketDataType") == [(1, 1), (2, 3), (3, 2)]
        assert {t for t, _ in tick_prices(app, 1)} <= LIVE_PRICE_TICKS
        assert {t for t, _ in tick_prices(app, 2)} <= DELAYED_PRICE_TICKS
    finally:
        app.close()


def test_pnl_single_answers_for_the_managed_account_it_names(sim_gateway_factory):
    # A login managing several accounts: reqPnLSingle(account, modelCode, conId) answers with that account's
    # position in the contract, as reqPnL answers with that account's P&L; the trading account's position is not
    # the other account's.
    gw = sim_gateway_factory(managed_accounts=("DU1234567", "DU7654321"), tick_interval=0.05)
    gw.pause_market()
    gw.set_price("AAPL", "190.00")
    app = Recorder(gw.port)
    try:
        first = app.next_id
        app.app.placeOrder(first, stock("AAPL"), order("BUY", 10, "MKT"))
        app.wait(lambda: "Filled" in [a[1] for a in app.seen("orderStatus", first)], what="the fill")
        app.app.reqPnLSingle(1, "DU1234567", "", 265598)
        app.app.reqPnLSingle(2, "DU7654321", "", 265598)
        app.wait(lambda: app.seen("pnlSingle", 1) and app.seen("pnlSingle", 2), what="both answers")
        assert app.seen("pnlSingle", 1)[0][1] == 10
        assert app.seen("pnlSingle", 2)[0][1:] == (0, 0.0, 0.0, 0.0, 0.0)
        app.app.cancelPnLSingle(1)
        app.app.cancelPnLSingle(2)
    finally:
        app.close()
