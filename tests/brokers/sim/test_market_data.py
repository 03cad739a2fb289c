from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ib_async import Forex, Index, Stock

from .conftest import wait_until


def test_snapshot_ticks(gw, connect):
    ib = connect(gw)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    q = gw.quote("AAPL")
    [t] = ib.reqTickers(aapl)
    assert (t.bid, t.ask, t.last) == (float(q["bid"]), float(q["ask"]), float(q["last"]))
    assert t.bidSize > 0 and t.askSize > 0 and t.volume > 0
    assert t.close > 0 and t.high >= t.low > 0
    assert t.ask - t.bid >= 0.01 - 1e-9 and t.minTick == 0.01
    assert t.marketDataType == 1


def test_fx_and_index_snapshots(gw, connect):
    ib = connect(gw)
    eur, spx = ib.qualifyContracts(Forex("EURUSD"), Index("SPX", "CBOE"))
    t_eur, t_spx = ib.reqTickers(eur, spx)
    assert 1.0 < t_eur.bid < t_eur.ask < 1.2
    assert round(t_eur.bid / 0.00005, 6) == round(t_eur.bid / 0.00005)
    assert t_spx.last > 1000


def test_streaming_ticks_and_cancel(gw, connect):
    ib = connect(gw)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    ticker = ib.reqMktData(aapl)
    wait_until(ib, lambda: ticker.last == 190.0, what="initial ticks")
    gw.set_price("AAPL", "191.37")
    wait_until(ib, lambda: ticker.last == 191.37, what="pushed tick")
    assert ticker.bid == 191.37 and ticker.ask == 191.38
    gw.resume_market()
    # Trades stream in at any hour; the price may not leave its tick overnight, when the walk is slow.
    seen: list[float] = []
    ticker.updateEvent += lambda t: seen.append(t.last)
    wait_until(ib, lambda: len(seen) >= 3, what="ticks of the running market")
    ib.cancelMktData(aapl)
    ib.sleep(0.1)
    n = len(seen)
    gw.set_price("AAPL", "150")
    ib.sleep(0.2)
    assert 150.0 not in seen and len(seen) <= n + 1


def test_delayed_market_data(gw, connect):
    ib = connect(gw)
    gw.no_live_permission.add("MSFT")  # delayed data is for symbols without a live subscription
    ib.reqMarketDataType(3)
    [msft] = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))
    [t] = ib.reqTickers(msft)
    assert t.marketDataType == 3
    assert t.last == 420.0 and t.bid > 0 and t.ask > 0
    seen: set[int] = set()
    streaming = ib.reqMktData(msft)
    streaming.updateEvent += lambda tk: seen.update(x.tickType for x in tk.ticks)
    wait_until(ib, lambda: {66, 67, 68} <= seen, what="delayed tick types")
    assert not seen & {1, 2, 4}
    assert streaming.marketDataType == 3
    # A symbol the account has a live subscription for gets live data though delayed data is asked for.
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    [live] = ib.reqTickers(aapl)
    assert live.marketDataType == 1


def test_price_paths_are_deterministic(sim_gateway_factory):
    a = sim_gateway_factory(seed=11, tick_interval=10)
    b = sim_gateway_factory(seed=11, tick_interval=10)
    c = sim_gateway_factory(seed=12, tick_interval=10)
    moments = [datetime(2026, 11, 24, 15, m, s, tzinfo=UTC) for m in range(0, 60, 7) for s in (0, 31)]
    for symbol in ("AAPL", "ES", "EUR.USD"):
        paths = [g.market.path(g.market.lookup(symbol)) for g in (a, b, c)]
        assert [paths[0].price(t) for t in moments] == [paths[1].price(t) for t in moments]
        assert [paths[0].price(t) for t in moments] != [paths[2].price(t) for t in moments]
    q = a.quote("AAPL")
    assert q["last"] == q["last"].quantize(q["last"].__class__("0.01"))


def test_historical_bars(sim_gateway_factory, version, connect):
    gw = sim_gateway_factory(server_version=version)  # the market as it is: history and live share one path
    ib = connect(gw)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    bars = ib.reqHistoricalData(aapl, "", "2 D", "5 mins", "TRADES", useRTH=True, formatDate=1)
    assert bars and all(b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close) for b in bars)
    assert bars[0].date.tzinfo is not None
    assert all(9 * 60 + 30 <= b.date.hour * 60 + b.date.minute < 16 * 60 for b in bars)
    live = float(gw.quote("AAPL")["last"])
    last_minute = ib.reqHistoricalData(aapl, "", "60 S", "1 min", "TRADES", useRTH=False, formatDate=2)
    # While the market trades, the last bar closes near the live price (a closed market has no recent bar).
    recent = [b for b in last_minute if datetime.now(UTC) - b.date < timedelta(minutes=5)]
    assert not recent or abs(recent[-1].close - live) / live < 0.01
    all_hours = ib.reqHistoricalData(aapl, "", "2 D", "5 mins", "TRADES", useRTH=False, formatDate=2)
    assert len(all_hours) > len(bars) and all_hours[0].date.tzinfo == UTC
    daily = ib.reqHistoricalData(aapl, "", "1 M", "1 day", "TRADES", useRTH=True, formatDate=1)
    assert 15 <= len(daily) <= 24 and isinstance(daily[0].date, date) and not isinstance(daily[0].date, datetime)
    weekly = ib.reqHistoricalData(aapl, "", "1 Y", "1 week", "MIDPOINT", useRTH=True, formatDate=1)
    assert 50 <= len(weekly) <= 54
    # IB also takes the spellings its 321 lists as legal, "1W" and "1M", for the same bars.
    # (The last bar, still in the making, may have moved between the two requests.)
    weeks = ib.reqHistoricalData(aapl, "", "1 Y", "1W", "MIDPOINT", useRTH=True, formatDate=1)
    assert [b.date for b in weeks] == [b.date for b in weekly] and weeks[:-1] == weekly[:-1]
    monthly = ib.reqHistoricalData(aapl, "", "1 Y", "1 month", "MIDPOINT", useRTH=True, formatDate=1)
    assert 12 <= len(monthly) <= 13
    months = ib.reqHistoricalData(aapl, "", "1 Y", "1M", "MIDPOINT", useRTH=True, formatDate=1)
    assert [b.date for b in months] == [b.date for b in monthly] and months[:-1] == monthly[:-1]
    # One-second bars from a session that has ended (the five minutes before now may hold no trading);
    # noon New York is inside every regular session, half days included.
    session_day = daily[-2].date
    in_session = datetime(
        session_day.year, session_day.month, session_day.day, 12, 0, tzinfo=ZoneInfo("America/New_York")
    )
    secs = ib.reqHistoricalData(aapl, in_session, "300 S", "1 secs", "TRADES", useRTH=False, formatDate=2)
    assert 0 < len(secs) <= 300
    assert all(in_session - timedelta(seconds=300) <= b.date < in_session for b in secs)
    again = ib.reqHistoricalData(aapl, "", "2 D", "5 mins", "TRADES", useRTH=True, formatDate=1)
    # Completed bars never change; only the bar in progress (if the session is open) may have moved. The window
    # ends now, so a bar (or, at the open, a session) begun between the two requests shifts it: match by time.
    completed = {b.date: b.close for b in bars[:-1]}
    shared = [b for b in again if b.date in completed]
    assert shared and all(b.close == completed[b.date] for b in shared)
    head = ib.reqHeadTimeStamp(aapl, "TRADES", True, 1)
    assert head.year == 2004


@pytest.mark.parametrize("what", ["TRADES", "BID", "ASK", "MIDPOINT"])
def test_historical_bars_hold_nothing_after_the_request_time(sim_gateway_factory, connect, what):
    # Asked at 10:13:27 New York: "60 S" of "5 secs" are the twelve bars of the minute before, the last
    # one (10:13:25) holding only its first two seconds; the 10:13 minute bar holds its first 27 seconds.
    # Asked again once those bars are complete, they may only have grown.
    ib = connect(sim_gateway_factory())
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    asked = datetime(2025, 6, 18, 14, 13, 27, tzinfo=UTC)

    def bars(end: datetime, duration: str, size: str) -> list:
        text = end.strftime("%Y%m%d-%H:%M:%S")
        return ib.reqHistoricalData(aapl, text, duration, size, what, useRTH=False, formatDate=2, timeout=10)

    secs = bars(asked, "60 S", "5 secs")
    assert [b.date for b in secs] == [asked - timedelta(seconds=57 - 5 * k) for k in range(12)]
    minutes = bars(asked, "300 S", "1 min")
    assert minutes[-1].date == asked.replace(second=0)
    later = asked + timedelta(minutes=2)
    done_secs = {b.date: b for b in bars(later, "180 S", "5 secs")}
    done_minute = {b.date: b for b in bars(later, "600 S", "1 min")}[minutes[-1].date]
    for partial, whole in ((secs[-1], done_secs[secs[-1].date]), (minutes[-1], done_minute)):
        assert partial.open == whole.open and whole.low <= partial.low <= partial.high <= whole.high
    assert [(b.open, b.high, b.low, b.close) for b in secs[:-1]] == [
        (b.open, b.high, b.low, b.close) for b in (done_secs[b.date] for b in secs[:-1])
    ]
    if what == "TRADES":
        assert 0 < minutes[-1].volume < done_minute.volume
    now = bars(datetime.now(UTC), "60 S", "5 secs")
    assert now and now[-1].date <= datetime.now(UTC)


def test_a_large_history_request_does_not_hold_up_other_clients(sim_gateway_factory, connect):
    # While one client's twenty years of daily bars are in the making, another client is answered.
    gw = sim_gateway_factory()
    backfill, other = connect(gw, client_id=1), connect(gw, client_id=2)
    [aapl] = backfill.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    gw.faults.hold_history()
    try:
        history = asyncio.ensure_future(
            backfill.reqHistoricalDataAsync(aapl, "", "20 Y", "1 day", "TRADES", useRTH=True, timeout=30)
        )
        wait_until(backfill, lambda: gw.faults.history_waiting() == 1, what="the history request held")
        answered = asyncio.ensure_future(other.reqCurrentTimeAsync())
        wait_until(other, answered.done, what="the other client's current time")
        assert not history.done()
    finally:
        gw.faults.release_history()
    wait_until(backfill, history.done, timeout=30, what="the history")
    assert len(history.result()) > 4000


def test_historical_errors_are_reported(gw, connect):
    ib = connect(gw)
    [eur] = ib.qualifyContracts(Forex("EURUSD"))
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    assert not ib.reqHistoricalData(eur, "", "1 D", "1 min", "TRADES", True)
    assert ib.reqHistoricalData(eur, "", "1 D", "1 hour", "MIDPOINT", False)
    assert errors == [162]


def test_historical_keep_up_to_date(gw, connect):
    ib = connect(gw)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    bars = ib.reqHistoricalData(aapl, "", "3600 S", "1 min", "TRADES", useRTH=False, formatDate=1, keepUpToDate=True)
    n = len(bars)
    gw.set_price("AAPL", "199.99")
    wait_until(ib, lambda: bars[-1].close == 199.99, what="bar update")
    assert len(bars) in (n, n + 1) and bars[-1].high >= 199.99
    ib.cancelHistoricalData(bars)


def test_historical_schedule_lists_the_sessions_of_the_daily_bars(sim_gateway_factory, connect):
    # whatToShow SCHEDULE (server version 165+) answers with the window's sessions in the exchange's zone;
    # the week of 2025-06-16 has the Juneteenth holiday on Thursday.
    ib = connect(sim_gateway_factory())
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    end = "20250620-21:00:00"
    daily = ib.reqHistoricalData(aapl, end, "7 D", "1 day", "TRADES", useRTH=False)
    schedule = ib.reqHistoricalSchedule(aapl, 7, end, useRTH=False)
    assert [s.refDate for s in schedule.sessions] == [b.date.strftime("%Y%m%d") for b in daily]
    # The window opens at 17:00 on Friday 13th, inside that day's extended session (04:00-20:00).
    assert [s.refDate for s in schedule.sessions] == ["20250613", "20250616", "20250617", "20250618", "20250620"]
    assert schedule.sessions[0].startDateTime == "20250613-04:00:00" == schedule.startDateTime
    assert schedule.sessions[-1].endDateTime == "20250620-20:00:00" == schedule.endDateTime
    assert schedule.timeZone == "US/Eastern"
