"""Fidelity: the simulated gateway behaves like IB where a difference would mislead a developer who
goes live. Each test names the IB behaviour it checks and where IB documents it: the TWS API error
list ("Message codes", TWS API reference) or the API reference's chapter on the request.

Driven with ib_async and, where noted, with IB's own client (``ibapi``, the official package).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ib_async import IB, Contract, LimitOrder, MarketOrder, Option, Order, Stock, TagValue, util

from brokers.sim.history import make_bars

from .conftest import wait_until

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def sim(sim_gateway_factory):
    """IB's limits and margin check on, the market open at any hour, quotes paused."""
    g = sim_gateway_factory(tick_interval=0.05, ib_limits=True)
    g.pause_market()
    return g


@pytest.fixture
def ib(sim):
    # +PACEAPI: the gateway paces this client's bursts instead of disconnecting it (API reference,
    # "Message pacing"), so a loaded test machine cannot trip the message-rate limit.
    client = IB()
    client.client.setConnectOptions("+PACEAPI")
    client.connect("127.0.0.1", sim.port, clientId=1, timeout=5, raiseSyncErrors=True)
    yield client
    client.disconnect()


@pytest.fixture
def aapl(ib):
    [c] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    return c


def _errors(ib: IB) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code, msg))
    return seen


def _codes(errors, req_id=None) -> list[int]:
    return [code for rid, code, _ in errors if req_id is None or rid == req_id]


# ------------------------------------------------------------------ 1. margin


def test_an_order_the_account_cannot_margin_is_rejected_with_201(sim, ib, aapl, allow_ib_errors):
    # IB error list, 201 "Order rejected - reason:" with the margin text; Reg T 50% initial margin on
    # stock. A $1M account cannot carry 600,000 AAPL (~$114M) nor a 1e9-share limit order.
    errors = _errors(ib)
    big = ib.placeOrder(aapl, MarketOrder("BUY", 600_000))
    huge = ib.placeOrder(aapl, LimitOrder("BUY", 1_000_000_000, 1.00))
    wait_until(ib, lambda: big.orderStatus.status == "Inactive" and huge.orderStatus.status == "Inactive")
    texts = [msg for rid, code, msg in errors if code == 201 and rid in (big.order.orderId, huge.order.orderId)]
    assert len(texts) == 2 and all("EQUITY WITH LOAN VALUE" in t and "INITIAL MARGIN" in t for t in texts)
    assert sim.executions() == [] and sim.positions() == {}
    ok = ib.placeOrder(aapl, MarketOrder("BUY", 1000))  # ~$190k: covered
    wait_until(ib, lambda: ok.orderStatus.status == "Filled")


def test_closing_a_position_is_never_refused_for_margin(sim, ib, aapl):
    # IB applies its pre-trade margin check to orders that add risk; an order that reduces it passes.
    buy = ib.placeOrder(aapl, MarketOrder("BUY", 4000))
    wait_until(ib, lambda: buy.orderStatus.status == "Filled")
    sim.set_price("AAPL", "60.00")  # the position loses most of its value
    sell = ib.placeOrder(aapl, MarketOrder("SELL", 4000))
    wait_until(ib, lambda: sell.orderStatus.status == "Filled")


def test_margin_figures_follow_reg_t_per_sec_type(sim, ib, aapl):
    # Account values (API reference, reqAccountUpdates): InitMarginReq and BuyingPower follow the
    # positions; Reg T gives stock a 50% initial requirement and 2x buying power on available funds.
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1000))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    wait_until(ib, lambda: any(v.tag == "InitMarginReq" and float(v.value) > 0 for v in ib.accountValues()))
    wanted = ("InitMarginReq", "BuyingPower", "AvailableFunds")
    values = {v.tag: float(v.value) for v in ib.accountValues() if v.currency == "USD" and v.tag in wanted}
    price = float(sim.quote("AAPL")["last"])
    assert values["InitMarginReq"] == pytest.approx(1000 * price * 0.5, rel=1e-3)
    assert values["BuyingPower"] == pytest.approx(values["AvailableFunds"] * 2, rel=1e-3)


# ------------------------------------------------------------------ 2. IB limits


def _raw_session(port: int, client_id: int = 9) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    versions = b"v157..178"
    s.sendall(b"API\0" + struct.pack(">I", len(versions)) + versions)
    _read_frames(s, 1)
    s.sendall(_frame("71", "2", str(client_id), ""))
    return s


def _frame(*fields: str) -> bytes:
    body = "".join(f + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def _read_frames(s: socket.socket, n: int, timeout: float = 5.0) -> list[list[str]]:
    frames, buf = [], b""
    deadline = time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < deadline:
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            size = struct.unpack(">I", buf[:4])[0]
            frames.append(buf[4 : 4 + size].decode().split("\0")[:-1])
            buf = buf[4 + size :]
        if len(frames) >= n:
            break
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return frames


def _errors_in(frames: list[list[str]]) -> list[tuple[int, int]]:
    return [(int(f[2]), int(f[3])) for f in frames if f and f[0] == "4"]


def test_more_than_50_messages_a_second_get_error_100_and_a_disconnect(sim):
    # API reference, "Message pacing": TWS accepts at most 50 messages per second from a client; beyond
    # that it answers 100 "Max rate of messages per second has been exceeded" and drops the connection.
    s = _raw_session(sim.port)
    s.sendall(b"".join(_frame("49", "1") for _ in range(200)))  # 200 reqCurrentTime in one burst
    frames = _read_frames(s, 400, timeout=3)
    assert (-1, 100) in _errors_in(frames)
    assert sum(1 for f in frames if f and f[0] == "49") <= 50
    wait_until(IB(), lambda: sim.connected_client_ids() == set(), what="disconnect")
    s.close()


def test_messages_read_after_a_stall_do_not_count_against_the_rate_limit(sim, connect):
    # A client well under the limit (30 messages, then 30 more a second later) while the gateway is busy:
    # the gateway reads all 60 at once when it gets round to them, and answers them all.
    ib = connect(sim)
    answered: list[int] = []
    ib.wrapper.currentTime = answered.append
    sim.faults.stall()
    try:
        for _ in range(2):
            for _ in range(30):
                ib.client.reqCurrentTime()
            time.sleep(1.1)
    finally:
        sim.faults.unstall()
    wait_until(ib, lambda: len(answered) == 60 or not ib.isConnected(), what="the answers")
    assert ib.isConnected() and len(answered) == 60
    del ib.wrapper.currentTime  # ib_async's own again
    assert ib.reqCurrentTime()


def test_limits_can_be_switched_off_for_load_tests(sim_gateway_factory):
    quiet = sim_gateway_factory(ib_limits=False)
    s = _raw_session(quiet.port)
    s.sendall(b"".join(_frame("49", "1") for _ in range(200)))
    frames = _read_frames(s, 200 + 8, timeout=5)
    assert sum(1 for f in frames if f and f[0] == "49") == 200 and not [e for e in _errors_in(frames) if e[1] == 100]
    s.close()


def test_historical_pacing_violations_get_162(sim, ib, aapl, allow_ib_errors):
    # API reference, "Historical data limitations" (bars of 30 seconds or less): identical requests within
    # 15 s, or six or more for one contract within 2 s, are pacing violations (error 162).
    errors = _errors(ib)
    first = ib.reqHistoricalData(aapl, "", "1800 S", "5 secs", "TRADES", useRTH=False)
    again = ib.reqHistoricalData(aapl, "", "1800 S", "5 secs", "TRADES", useRTH=False)
    assert first and not again
    assert any(code == 162 and "pacing violation" in msg for _, code, msg in errors)
    errors.clear()
    for n in range(6):
        ib.reqHistoricalData(aapl, "", f"{60 + n} S", "1 secs", "MIDPOINT", useRTH=False)
    assert _codes(errors) == [162]


def test_the_101st_market_data_line_gets_error_101(sim, ib, aapl, allow_ib_errors):
    # IB error list, 101 "Max number of tickers has been reached" (a paper account has 100 lines).
    errors = _errors(ib)
    tickers = [ib.reqMktData(aapl, "", False, False) for _ in range(101)]
    wait_until(ib, lambda: 101 in _codes(errors))
    assert _codes(errors) == [101]
    ib.cancelMktData(tickers[0].contract)
    assert tickers


def test_1101_drops_market_data_and_1102_keeps_it(sim, ib, aapl, allow_ib_errors):
    # IB error list: 1100 connectivity lost; 1101 restored, data lost (subscriptions must be made again);
    # 1102 restored, data maintained.
    ticker = ib.reqMktData(aapl)
    wait_until(ib, lambda: ticker.last == ticker.last and ticker.last > 0, what="first ticks")
    sim.send_connectivity(1100)
    sim.set_price("AAPL", "181.11")
    ib.sleep(0.3)
    assert ticker.last != 181.11  # nothing flows while IB is unreachable
    sim.send_connectivity(1102)
    sim.set_price("AAPL", "182.22")
    wait_until(ib, lambda: ticker.last == 182.22, what="data maintained after 1102")
    sim.send_connectivity(1101)
    sim.set_price("AAPL", "183.33")
    ib.sleep(0.3)
    assert ticker.last == 182.22  # the subscription is gone
    again = ib.reqMktData(aapl)
    wait_until(ib, lambda: again.last == 183.33, what="a new subscription after 1101")


# ------------------------------------------------------------------ 3. hours, halts, history


def test_a_market_order_at_5am_new_york_waits_for_the_open_with_399(sim_gateway_factory, connect):
    # IB error list, 399: "your order will not be placed at the exchange until <open>"; the order is
    # accepted (PreSubmitted) and trades at the open.
    now = {"t": datetime(2026, 11, 24, 10, 11, tzinfo=UTC)}  # 05:11 New York, a Tuesday
    gw = sim_gateway_factory(trading_hours="exchange", clock=lambda: now["t"])
    gw.pause_market()
    ib = connect(gw)
    errors = _errors(ib)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 10))
    wait_until(ib, lambda: 399 in _codes(errors, trade.order.orderId))
    assert "09:30:00" in next(msg for _, code, msg in errors if code == 399)
    assert [o.status for o in gw.orders()] == ["PreSubmitted"] and gw.executions() == []
    now["t"] = datetime(2026, 11, 24, 14, 31, tzinfo=UTC)
    gw.set_price("AAPL", "190.00")
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")


def test_a_halted_instrument_does_not_trade_until_resumed(sim, ib, aapl):
    # Tick type 49 "Halted" (API reference, tick types): 1 while trading is halted; orders rest.
    ticker = ib.reqMktData(aapl)
    wait_until(ib, lambda: ticker.last > 0)
    sim.halt("AAPL")
    wait_until(ib, lambda: ticker.halted == 1, what="halted tick")
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 5))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.sleep(0.3)
    assert trade.orderStatus.status == "Submitted" and sim.executions() == []
    sim.resume("AAPL")
    wait_until(ib, lambda: trade.orderStatus.status == "Filled" and ticker.halted != 1)


def test_history_is_the_same_for_every_request_and_every_gateway(sim_gateway_factory, connect):
    # History is a record of the past: asking again, or asking another gateway with the same seed that
    # started later, gives the same bars.
    a = sim_gateway_factory(seed=7)
    ib = connect(a)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    end = "20261130 21:00:00 UTC"
    first = ib.reqHistoricalData(aapl, end, "22 D", "1 day", "TRADES", useRTH=True)
    again = ib.reqHistoricalData(aapl, end, "22 D", "1 day", "TRADES", useRTH=True)
    b = sim_gateway_factory(seed=7)
    other = connect(b, client_id=2).reqHistoricalData(aapl, end, "22 D", "1 day", "TRADES", useRTH=True)
    assert len(first) >= 15 and list(first) == list(again) == list(other)  # (ib_async's lists compare by identity)
    dates = [bar.date for bar in first]
    assert date(2026, 11, 26) not in dates and {date(2026, 11, 25), date(2026, 11, 27)} <= set(dates)  # Thanksgiving


def test_history_has_no_future_bars_nothing_before_the_head_and_no_bar_before_the_open():
    from brokers.sim.market import Market

    market = Market(7)
    aapl = market.lookup("AAPL")
    before_open = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 08:00 New York
    later_today = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # asked for 16:00 while it is 08:00
    daily = make_bars(market, aapl, later_today, (5, "D"), 86400, True, "TRADES", now=before_open)
    assert daily and daily[-1].start.date() < date(2026, 11, 24)
    intraday = make_bars(market, aapl, later_today, (1, "D"), 300, False, "TRADES", now=before_open)
    assert intraday and max(b.start for b in intraday) < before_open
    early = make_bars(market, aapl, datetime(2004, 1, 9, 21, tzinfo=UTC), (1, "M"), 86400, True, "TRADES")
    assert early and min(b.start for b in early).date() >= date(2004, 1, 2)


@pytest.mark.parametrize(("bar_s", "minutes"), [(300, 5), (900, 15), (3600, 30)])
def test_intraday_bars_start_on_their_interval_whatever_the_request_time(bar_s, minutes):
    from brokers.sim.market import Market

    market = Market(7)
    aapl = market.lookup("AAPL")
    asked_at = datetime(2026, 11, 24, 15, 13, 27, tzinfo=UTC)  # 10:13:27 New York, mid-interval
    bars = make_bars(market, aapl, asked_at, (1, "D"), bar_s, True, "TRADES", now=asked_at)
    starts = [b.start.astimezone(ZoneInfo("America/New_York")) for b in bars]
    assert starts and all(s.minute % minutes == 0 and s.second == 0 for s in starts), starts[:3]
    assert len(set(starts)) == len(starts)


def test_the_close_tick_is_the_previous_daily_bar_and_volumes_agree(sim_gateway_factory, connect):
    gw = sim_gateway_factory(seed=7)
    ib = connect(gw)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    today = datetime.now(NEW_YORK).date()
    daily = ib.reqHistoricalData(aapl, "", "10 D", "1 day", "TRADES", useRTH=True)
    previous = [b for b in daily if b.date < today][-1]
    assert float(gw.quote("AAPL")["close"]) == previous.close
    end = datetime(previous.date.year, previous.date.month, previous.date.day, 23, tzinfo=NEW_YORK)
    hourly = ib.reqHistoricalData(
        aapl, end.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S"), "1 D", "1 hour", "TRADES", useRTH=True
    )
    assert sum(b.volume for b in hourly) == previous.volume and previous.volume > 1_000_000


def test_volatility_depends_on_asset_class_and_session():
    from brokers.sim.market import Market

    market = Market(7)

    def spread(symbol: str, hour: int) -> float:
        path = market.path(market.lookup(symbol))
        moves = []
        for day in range(10, 24):
            t = datetime(2026, 11, day, hour, 0, tzinfo=NEW_YORK)
            if t.weekday() < 5:
                a, b = path.price(t), path.price(t + timedelta(minutes=30))
                moves.append(abs(b / a - 1))
        return sum(moves) / len(moves)

    assert spread("EUR.USD", 11) < spread("AAPL", 11) < spread("TSLA", 11)
    assert spread("AAPL", 2) < spread("AAPL", 11) / 3  # overnight is quiet


# ------------------------------------------------------------------ 5. every request answered


def test_every_request_gets_an_answer(sim, ib, aapl, allow_ib_errors):
    # ib_async's async requests wait for the answer; IB always sends data or an error for these.
    errors = _errors(ib)
    [option] = ib.qualifyContracts(Option("AAPL", _expiry(sim), 190, "C", "SMART"))

    async def ask():
        calls = {
            "depth exchanges": ib.reqMktDepthExchangesAsync(),
            "news providers": ib.reqNewsProvidersAsync(),
            "market rule": ib.reqMarketRuleAsync(26),
            "smart components": ib.reqSmartComponentsAsync("9c0001"),
            "scanner parameters": ib.reqScannerParametersAsync(),
            "user info": ib.reqUserInfoAsync(),
            "histogram": ib.reqHistogramDataAsync(aapl, True, "1 day"),
            "historical ticks": ib.reqHistoricalTicksAsync(aapl, "", datetime.now(UTC), 50, "TRADES", False),
            "fundamental data": ib.reqFundamentalDataAsync(aapl, "ReportSnapshot"),
            "implied volatility": ib.calculateImpliedVolatilityAsync(option, 5.0, 190.0),
            "option price": ib.calculateOptionPriceAsync(option, 0.25, 190.0),
        }
        results = await asyncio.gather(*(asyncio.wait_for(c, 5) for c in calls.values()), return_exceptions=True)
        return dict(zip(calls, results, strict=True))

    answers = util.run(ask())
    hung = [name for name, value in answers.items() if isinstance(value, asyncio.TimeoutError | TimeoutError)]
    assert hung == []
    assert answers["market rule"][0].increment == 0.01 and len(answers["historical ticks"]) == 50
    assert answers["implied volatility"].impliedVol > 0 and answers["option price"].optPrice > 0
    assert 430 in _codes(errors)  # fundamentals: IB error list, 430 "fundamentals data ... not available"
    depth = ib.reqMktDepth(aapl, 5)
    bars = ib.reqRealTimeBars(aapl, 5, "MIDPOINT", False)
    tbt = ib.reqTickByTickData(aapl, "BidAsk")
    wait_until(ib, lambda: depth.domBids and depth.domAsks and tbt.tickByTicks, what="depth and tick-by-tick")
    wait_until(ib, lambda: len(bars) > 0, timeout=12, what="a 5-second real-time bar")
    got: list = []
    ib.wrapper.displayGroupList = lambda req_id, groups: got.append(groups)  # no ib_async method for it
    ib.client.queryDisplayGroups(77)
    wait_until(ib, lambda: got, what="display groups")


def _expiry(sim) -> str:
    return min(i.last_trade_date for i in sim.market.instruments.values() if i.sec_type == "OPT")


def test_malformed_requests_are_answered_320(sim):
    # IB error list, 320 "Error reading request": a request TWS cannot parse is answered against its id.
    s = _raw_session(sim.port, client_id=12)
    contract = ["265598", "AAPL", "STK", "", "0", "", "", "SMART", "", "USD", "", ""]
    s.sendall(_frame("20", "41", *contract, "0", "", "1 day", "5 D", "1", "TRADES", "abc", "0", ""))
    s.sendall(_frame("3", "42", *contract, "", "", "BUY", "10", "MKT"))  # a truncated placeOrder
    frames = _read_frames(s, 20, timeout=2)
    assert {(41, 320), (42, 320)} <= set(_errors_in(frames))
    s.close()


def test_unknown_message_ids_are_answered(sim):
    s = _raw_session(sim.port, client_id=13)
    s.sendall(_frame("999", "1"))
    assert (-1, 320) in _errors_in(_read_frames(s, 10, timeout=2))
    s.close()


# ------------------------------------------------------------------ 6. generic ticks and greeks


def test_generic_ticks_and_option_greeks(sim, ib, aapl):
    # API reference, "Generic tick types": 233 RTVolume, 236 shortable, 165 averages (avVolume, 52-week
    # range), 104/106 historical and implied volatility; options stream tickOptionComputation.
    sim.set_price("AAPL", "190.00")  # a trade first: on a closed day (a weekend, a holiday) nothing has traded
    ticker = ib.reqMktData(aapl, "233,236,165,104,106")
    wait_until(ib, lambda: ticker.rtVolume > 0 and ticker.shortable > 2.5, what="RTVolume and shortable")
    wait_until(ib, lambda: ticker.avVolume > 0 and ticker.high52week > ticker.low52week > 0)
    wait_until(ib, lambda: ticker.histVolatility > 0 and ticker.impliedVolatility > 0)
    [call] = ib.qualifyContracts(Option("AAPL", _expiry(sim), 190, "C", "SMART"))
    opt = ib.reqMktData(call)
    wait_until(ib, lambda: opt.modelGreeks is not None and opt.bidGreeks is not None, what="greeks")
    assert 0 < opt.modelGreeks.delta < 1 and opt.modelGreeks.gamma > 0 and opt.modelGreeks.undPrice > 0


def test_an_unknown_generic_tick_gets_321(sim, ib, aapl, allow_ib_errors):
    errors = _errors(ib)
    ib.reqMktData(aapl, "999")
    wait_until(ib, lambda: 321 in _codes(errors))


# ------------------------------------------------------------------ 7. order types


@pytest.mark.parametrize(
    "order",
    [
        Order(action="BUY", totalQuantity=10, orderType="MIDPRICE"),
        Order(action="BUY", totalQuantity=10, orderType="REL", auxPrice=0.01, lmtPrice=200),
        Order(action="BUY", totalQuantity=10, orderType="MIT", auxPrice=195.0),
        Order(action="SELL", totalQuantity=10, orderType="TRAIL LIMIT", auxPrice=1.0, lmtPriceOffset=0.1),
        Order(
            action="BUY",
            totalQuantity=10,
            orderType="LMT",
            lmtPrice=191.0,
            algoStrategy="Adaptive",
            algoParams=[TagValue("adaptivePriority", "Normal")],
        ),
    ],
    ids=["MIDPRICE", "REL", "MIT", "TRAIL LIMIT", "Adaptive"],
)
def test_ib_order_types_are_accepted(sim, ib, aapl, order):
    # API reference, "Order types" and "IB algos": these are valid IB orders (no 201).
    sim.set_price("AAPL", "190.00")
    errors = _errors(ib)
    trade = ib.placeOrder(aapl, order)
    wait_until(ib, lambda: trade.orderStatus.status in ("Submitted", "Filled"))
    assert 201 not in _codes(errors)
    if order.orderType == "TRAIL LIMIT":  # sell trail: stop 1.00 under the high water mark
        sim.set_price("AAPL", "188.95")  # triggers at 189.00; the limit 188.90 lets the bid of 188.95 fill
    wait_until(ib, lambda: trade.orderStatus.status == "Filled")
    if order.orderType == "MIDPRICE":
        assert trade.orderStatus.avgFillPrice == 190.0  # between bid 190.00 and ask 190.01, on the tick


# ------------------------------------------------------------------ 8. error codes


def test_ib_error_codes(sim, ib, aapl, allow_ib_errors):
    errors = _errors(ib)
    # IB error list, 434 "The order size cannot be zero".
    zero = ib.placeOrder(aapl, MarketOrder("BUY", 0))
    wait_until(ib, lambda: 434 in _codes(errors, zero.order.orderId))
    # 10268: the EtradeOnly attribute is not supported.
    etrade = MarketOrder("BUY", 1)
    etrade.eTradeOnly = True
    t = ib.placeOrder(aapl, etrade)
    wait_until(ib, lambda: 10268 in _codes(errors, t.order.orderId))
    # 321 for invalid historical requests: bar size, whatToShow, an end date with keepUpToDate.
    # (ib_async files 321 among warnings and keeps waiting, so these calls end on its request timeout.)
    ib.RequestTimeout = 1
    for args, kwargs in (
        (("", "1 D", "7 mins", "TRADES", True), {}),
        (("", "1 D", "1 hour", "NONSENSE", True), {}),
        (("20261120 16:00:00 US/Eastern", "1 D", "1 hour", "TRADES", True), {"keepUpToDate": True}),
    ):
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            assert not ib.reqHistoricalData(aapl, *args, **kwargs)
    assert _codes(errors).count(321) == 3
    [bar_size_text] = [m for _, c, m in errors if c == 321 and "bar size" in m]
    assert bar_size_text.endswith(
        "Legal ones are: 1 secs, 5 secs, 10 secs, 15 secs, 30 secs, 1 min, 2 mins, 3 mins, "
        "5 mins, 10 mins, 15 mins, 20 mins, 30 mins, 1 hour, 2 hours, 3 hours, 4 hours, "
        "8 hours, 1 day, 1W, 1M"
    )
    # 2174: an end time without a zone is a warning; the data still comes.
    assert ib.reqHistoricalData(aapl, "20261120 16:00:00", "2 D", "1 hour", "TRADES", True)
    assert 2174 in _codes(errors)
    # 321 for a what-if on a contract IB cannot resolve (not 200).
    before = _codes(errors).count(321)
    nope = Contract(symbol="NOPE", secType="STK", exchange="SMART", currency="USD")
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        ib.whatIfOrder(nope, MarketOrder("BUY", 1))
    wait_until(ib, lambda: _codes(errors).count(321) == before + 1)
    assert 200 not in _codes(errors)
    # 327: only client 0 may bind TWS orders.
    ib.client.reqAutoOpenOrders(True)
    wait_until(ib, lambda: 327 in _codes(errors))


_TIF_DAY_ONLY = "The Tif option should be set to DAY for MOC and LOC orders."
_TIF_INCOMPATIBLE = "The TIF (Tif type) and the order type are incompatible."


@pytest.mark.parametrize(
    ("order", "code", "text"),
    [
        (Order(action="BUY", totalQuantity=10, orderType="MOC", tif="GTC"), 113, _TIF_DAY_ONLY),
        (Order(action="BUY", totalQuantity=10, orderType="LOC", lmtPrice=189.0, tif="GTC"), 113, _TIF_DAY_ONLY),
        (Order(action="SELL", totalQuantity=10, orderType="MOC", tif="IOC"), 113, _TIF_DAY_ONLY),
        (Order(action="SELL", totalQuantity=10, orderType="MOC", tif="OPG"), 113, _TIF_DAY_ONLY),
        (Order(action="BUY", totalQuantity=10, orderType="STP", auxPrice=195.0, tif="OPG"), 111, _TIF_INCOMPATIBLE),
    ],
    ids=["MOC GTC", "LOC GTC", "MOC IOC", "MOC OPG", "STP OPG"],
)
def test_auction_orders_with_the_wrong_tif_are_rejected_as_ib_does(sim, ib, aapl, allow_ib_errors, order, code, text):
    # IB error list ("Message codes"): 113 "The Tif option should be set to DAY for MOC and LOC orders.";
    # 111 "The TIF (Tif type) and the order type are incompatible." (tif OPG: market or limit on open only).
    # A rejected order is reported Inactive, with the error on its order id.
    errors = _errors(ib)
    trade = ib.placeOrder(aapl, order)
    wait_until(ib, lambda: _codes(errors, trade.order.orderId) and trade.isDone())
    assert [(c, m) for rid, c, m in errors if rid == trade.order.orderId] == [(code, text)]
    assert trade.orderStatus.status == "Inactive"
    assert [(o.order_type, o.status) for o in sim.orders()] == [(order.orderType, "Inactive")]
    assert sim.executions() == []


def test_auction_orders_with_their_own_tif_are_accepted(sim, ib, aapl):
    # The orders IB takes: MOC and LOC for the day, market and limit on open.
    errors = _errors(ib)
    trades = [
        ib.placeOrder(aapl, order)
        for order in (
            Order(action="BUY", totalQuantity=10, orderType="MOC", tif="DAY"),
            Order(action="BUY", totalQuantity=10, orderType="LOC", lmtPrice=189.0, tif="DAY"),
            Order(action="BUY", totalQuantity=10, orderType="MKT", tif="OPG"),
            Order(action="BUY", totalQuantity=10, orderType="LMT", lmtPrice=189.0, tif="OPG"),
        )
    ]
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    assert _codes(errors) == []


# ------------------------------------------------------------------ IB's own client (ibapi)


class _IbapiApp:
    """IB's official client on its own thread, collecting what comes back."""

    def __init__(self, port: int, client_id: int) -> None:
        from ibapi.client import EClient
        from ibapi.wrapper import EWrapper

        outer = self

        class App(EWrapper, EClient):
            def __init__(self) -> None:
                EClient.__init__(self, self)

            def error(self, req_id, code, text):  # noqa: ANN001
                outer.errors.append((req_id, code, text))

            def nextValidId(self, order_id):  # noqa: ANN001, N802
                outer.next_id = order_id
                outer.ready.set()

            def familyCodes(self, codes):  # noqa: ANN001, N802
                outer.answers["family codes"] = codes

            def marketRule(self, rule_id, increments):  # noqa: ANN001, N802
                outer.answers["market rule"] = increments

            def mktDepthExchanges(self, rows):  # noqa: ANN001, N802
                outer.answers["depth exchanges"] = rows

            def orderStatus(self, order_id, status, *rest):  # noqa: ANN001, N802
                outer.statuses[order_id] = status

        self.errors: list = []
        self.answers: dict = {}
        self.statuses: dict = {}
        self.ready = threading.Event()
        self.next_id = 0
        self.app = App()
        self.app.connect("127.0.0.1", port, client_id)
        self.thread = threading.Thread(target=self.app.run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5), "ibapi did not get nextValidId"

    def wait(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
            time.sleep(0.02)

    def close(self) -> None:
        self.app.disconnect()
        self.thread.join(5)


@pytest.fixture
def ibapi_app(sim):
    app = _IbapiApp(sim.port, client_id=21)
    yield app
    app.close()


def test_ibapi_gets_answers_margin_rejections_and_error_codes(sim, ibapi_app):
    from ibapi.contract import Contract as IbContract
    from ibapi.order import Order as IbOrder

    app = ibapi_app
    app.app.reqFamilyCodes()
    app.app.reqMarketRule(26)
    app.app.reqMktDepthExchanges()
    app.wait(lambda: {"family codes", "market rule", "depth exchanges"} <= set(app.answers))

    contract = IbContract()
    contract.conId, contract.symbol, contract.secType = 265598, "AAPL", "STK"
    contract.exchange, contract.currency = "SMART", "USD"

    def order(qty: int) -> IbOrder:
        o = IbOrder()
        o.action, o.orderType, o.totalQuantity = "BUY", "MKT", qty
        return o

    # ibapi 9.81 sets eTradeOnly and firmQuoteOnly by default; current TWS rejects both (10268, 10269).
    app.app.placeOrder(app.next_id, contract, order(1))
    app.wait(lambda: (app.next_id, 10268) in {(r, c) for r, c, _ in app.errors})
    big, zero = order(600_000), order(0)
    for o in (big, zero):
        o.eTradeOnly = o.firmQuoteOnly = False
    app.app.placeOrder(app.next_id + 1, contract, big)  # IB error list, 201: insufficient margin
    app.app.placeOrder(app.next_id + 2, contract, zero)  # 434: zero size
    app.wait(lambda: {(app.next_id + 1, 201), (app.next_id + 2, 434)} <= {(r, c) for r, c, _ in app.errors})
    assert app.statuses.get(app.next_id + 1) == "Inactive"
    app.app.reqHistoricalData(77, contract, "", "1 D", "7 mins", "TRADES", 1, 1, False, [])  # 321: bar size
    app.wait(lambda: (77, 321) in {(r, c) for r, c, _ in app.errors})
