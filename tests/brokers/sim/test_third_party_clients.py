"""Clients the gateway does not use, driven against the simulator the way their users drive IB Gateway.

ib_insync (0.9.86, the library ib_async was forked from; installed by requirements/compat.txt) offers
server versions 157-176, so against the simulator's 178 it works at 176, as it would against a current
IB Gateway. IB's own ``ibapi`` client is exercised in test_fidelity.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pytest
from ib_insync import IB, BarData, Contract, HistoricalSchedule, LimitOrder, MarketOrder, Position, Stock, Trade

from brokers.sim import SimGateway
from brokers.sim.history import make_bars
from tests.conftest import wait_for

T = TypeVar("T")
AAPL = 265598
CLIENT_ID = 7


class InsyncThread:
    """One ib_insync ``IB()`` living on a thread of its own, with that thread's own event loop.

    ib_insync's blocking API runs the current thread's asyncio loop. In this process the main thread's loop
    belongs to pytest-asyncio and ib_async, and ib_insync's ``util.getLoop()`` neither replaces a closed loop
    nor (without nest_asyncio) runs inside a running one. So the client is created, used and disconnected
    only on this thread: ``run(fn)`` calls ``fn(ib)`` there and returns its result or raises its exception.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ib_insync", initializer=self._own_loop)
        self.errors: list[tuple[int, int, str]] = []  # (reqId, code, message) as ib_insync's errorEvent gives them
        self.ib: IB = self._executor.submit(self._new_client).result(30)

    @staticmethod
    def _own_loop() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())

    def _new_client(self) -> IB:
        ib = IB()
        ib.RequestTimeout = 10  # a request the simulator leaves unanswered fails instead of hanging
        ib.errorEvent += lambda req_id, code, message, contract: self.errors.append((req_id, code, message))
        return ib

    def run(self, fn: Callable[[IB], T], timeout: float = 30.0) -> T:
        return self._executor.submit(fn, self.ib).result(timeout)

    def close(self) -> None:
        def shut(ib: IB) -> None:
            ib.disconnect()
            asyncio.get_event_loop().close()

        try:
            self.run(shut, timeout=10)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)  # never hang the session on a stuck client


def until(ib: IB, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Let ib_insync process messages until ``predicate`` holds (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        ib.waitOnUpdate(timeout=0.1)


@pytest.fixture(params=[178, 157], ids=["v178", "v157"])
def sim(request: pytest.FixtureRequest, sim_gateway_factory: Callable[..., SimGateway]) -> SimGateway:
    """Quotes paused at AAPL 190.00 / 190.01, so every price below is known in advance."""
    g = sim_gateway_factory(server_version=request.param, tick_interval=0.05)
    g.pause_market()
    g.set_price("AAPL", "190.00")
    return g


@pytest.fixture
def insync(sim: SimGateway) -> Iterator[InsyncThread]:
    client = InsyncThread()
    try:
        client.run(lambda ib: ib.connect("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5))
        yield client
    finally:
        client.close()


def _aapl(ib: IB) -> Contract:
    [contract] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    return contract


def test_ib_insync_connects_syncs_the_account_and_disconnects(sim):
    client = InsyncThread()
    try:

        def session(ib: IB) -> dict[str, Any]:
            ib.connect("127.0.0.1", sim.port, clientId=CLIENT_ID, timeout=5)
            summary = {v.tag: v.value for v in ib.accountSummary() if v.currency in ("USD", "")}
            return {
                "version": ib.client.serverVersion(),
                "accounts": ib.managedAccounts(),
                "summary": summary,
                "positions": ib.positions(),
                "connected": ib.isConnected(),
            }

        seen = client.run(session)
        assert seen["version"] == min(sim.server_version, 176)  # ib_insync's highest
        assert seen["connected"] and seen["accounts"] == [sim.account_code]
        assert float(seen["summary"]["NetLiquidation"]) == float(sim.cash()) == 1_000_000
        assert seen["summary"]["AccountType"] == "INDIVIDUAL" and seen["positions"] == []
        assert sim.connected_client_ids() == {CLIENT_ID}
        client.run(lambda ib: ib.disconnect())
        assert not client.run(lambda ib: ib.isConnected())
        wait_for(lambda: sim.connected_client_ids() == set(), timeout=5, message="the gateway to see the disconnect")
    finally:
        client.close()


def test_ib_insync_qualifies_quotes_and_streams(sim, insync):
    def session(ib: IB) -> tuple[Contract, list[float], float]:
        aapl = _aapl(ib)
        [snapshot] = ib.reqTickers(aapl)
        quoted = [snapshot.bid, snapshot.ask, snapshot.last, snapshot.close]  # ib_insync reuses the Ticker below
        live = ib.reqMktData(aapl)
        until(ib, lambda: live.last == 190.0, what="the first live ticks")
        sim.set_price("AAPL", "191.25")
        until(ib, lambda: live.last == 191.25 and live.bid == 191.25, what="the moved price")
        return aapl, quoted, live.ask

    aapl, (bid, ask, last, close), moved_ask = insync.run(session)
    assert (aapl.conId, aapl.primaryExchange, aapl.currency) == (AAPL, "NASDAQ", "USD")
    assert (bid, ask, last) == (190.00, 190.01, 190.00) and close > 0
    assert moved_ask == 191.26


def test_ib_insync_historical_bars_and_schedule(sim, insync):
    # A closed window in the past: the bars are a pure function of the seed, so the simulator's own
    # history module says what the client must decode. 2025-06-19 (Juneteenth) is an NYSE holiday.
    end = datetime(2025, 6, 20, 21, 0, tzinfo=UTC)
    expected = make_bars(sim.market, sim.market.lookup("AAPL"), end, (1, "W"), 86400, True, "TRADES")

    def session(ib: IB) -> tuple[list[BarData], list[BarData], HistoricalSchedule | list]:
        aapl = _aapl(ib)
        bars = ib.reqHistoricalData(aapl, "20250620-21:00:00", "1 W", "1 day", "TRADES", useRTH=True)
        hourly = ib.reqHistoricalData(aapl, "20250620-21:00:00", "1 D", "1 hour", "TRADES", useRTH=True)
        schedule = ib.reqHistoricalSchedule(aapl, 7, "20250620-21:00:00", useRTH=True)
        return bars, hourly, schedule

    bars, hourly, schedule = insync.run(session)
    assert [b.date for b in bars] == [b.start.date() for b in expected]
    assert date(2025, 6, 19) not in [b.date for b in bars] and date(2025, 6, 20) in [b.date for b in bars]
    assert [(b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
        (float(b.open), float(b.high), float(b.low), float(b.close), float(b.volume)) for b in expected
    ]
    assert len(hourly) == 7 and sum(b.volume for b in hourly) == bars[-1].volume  # 09:30-16:00 adds up
    if sim.server_version < 165:  # whatToShow SCHEDULE came with server version 165
        assert schedule == [] and any(c == 321 and "SCHEDULE" in m for _, c, m in insync.errors)
        return
    assert schedule.timeZone == "US/Eastern"
    assert [s.refDate for s in schedule.sessions] == [b.date.strftime("%Y%m%d") for b in bars]
    assert {(s.startDateTime[-8:], s.endDateTime[-8:]) for s in schedule.sessions} == {("09:30:00", "16:00:00")}


def test_ib_insync_market_order_fills_with_a_commission_report(sim, insync):
    def session(ib: IB) -> tuple[Trade, list[Position]]:
        trade = ib.placeOrder(_aapl(ib), MarketOrder("BUY", 300))
        until(ib, lambda: trade.isDone() and trade.fills and trade.fills[-1].commissionReport.commission > 0)
        until(ib, lambda: ib.positions(), what="the position")
        return trade, ib.positions()

    trade, positions = insync.run(session)
    [fill] = trade.fills
    [execution] = sim.executions()
    assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 300
    assert trade.orderStatus.avgFillPrice == fill.execution.price == 190.01  # a buy fills at the ask
    assert (fill.execution.side, fill.execution.shares, fill.execution.execId) == ("BOT", 300, execution.exec_id)
    assert fill.commissionReport.execId == execution.exec_id
    assert fill.commissionReport.commission == float(execution.commission) == 1.50  # 300 x $0.005
    assert [(p.account, p.contract.conId, p.position) for p in positions] == [(sim.account_code, AAPL, 300)]
    assert positions[0].avgCost == pytest.approx((300 * 190.01 + 1.50) / 300)


def test_ib_insync_limit_order_rests_is_listed_and_cancels(sim, insync):
    def place(ib: IB) -> tuple[Trade, list[int], list[int]]:
        trade = ib.placeOrder(_aapl(ib), LimitOrder("BUY", 50, 150.00))
        until(ib, lambda: trade.orderStatus.status == "Submitted", what="Submitted")
        open_ids = [t.order.orderId for t in ib.openTrades()]
        listed = [t.order.orderId for t in ib.reqAllOpenOrders()]
        return trade, open_ids, listed

    trade, open_ids, listed = insync.run(place)
    order_id = trade.order.orderId
    assert open_ids == listed == [order_id]
    assert [(o.order_id, o.status, o.remaining) for o in sim.orders()] == [(order_id, "Submitted", 50)]

    def cancel(ib: IB) -> list[Trade]:
        ib.cancelOrder(trade.order)
        until(ib, lambda: trade.orderStatus.status == "Cancelled", what="Cancelled")
        return ib.openTrades()

    assert insync.run(cancel) == []
    assert [e.status for e in trade.log][-2:] == ["PendingCancel", "Cancelled"]
    assert (order_id, 202) in {(r, c) for r, c, _ in insync.errors}  # IB error list, 202 "Order Canceled"
    assert [o.status for o in sim.orders()] == ["Cancelled"] and sim.executions() == []


def test_ib_insync_gets_200_for_an_unknown_symbol(sim, insync):
    def session(ib: IB) -> list[Contract]:
        nope = Stock("NOPE", "SMART", "USD")
        qualified = ib.qualifyContracts(nope)
        ib.reqMktData(nope)
        until(ib, lambda: [c for _, c, _ in insync.errors].count(200) == 2, what="a second 200")
        return qualified

    assert insync.run(session) == []
    assert all("No security definition" in m for _, c, m in insync.errors if c == 200)
    assert insync.run(lambda ib: ib.isConnected())  # an error about a request leaves the session up


def test_ib_insync_and_ib_async_share_one_gateway(sim, insync, connect):
    # Both libraries in one process (ib_insync on its thread, ib_async here), each with its own client id.
    ib_async_client = connect(sim, client_id=1)
    trade = insync.run(lambda ib: ib.placeOrder(_aapl(ib), LimitOrder("SELL", 20, 250.00)))
    insync.run(lambda ib: until(ib, lambda: trade.orderStatus.status == "Submitted"))
    seen = {(t.order.clientId, t.order.orderId): t.order.lmtPrice for t in ib_async_client.reqAllOpenOrders()}
    assert seen == {(CLIENT_ID, trade.order.orderId): 250.00}
    insync.run(lambda ib: ib.cancelOrder(trade.order))
    insync.run(lambda ib: until(ib, lambda: trade.orderStatus.status == "Cancelled"))
    assert ib_async_client.reqAllOpenOrders() == []
