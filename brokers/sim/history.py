"""Historical bars, ticks and histograms, all read off the instrument's price path (path.py).

A bar depends only on (seed, instrument, bar time): the same request gives the same bars on every
run, bars never reach past the request time or before the head timestamp, today's daily bar exists
only once the session has opened, and volumes of small bars add up to those of large ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from .market import Market
from .path import MINUTES, Minute, PricePath, session_minutes, utc_of
from .universe import Instrument, round_to_tick

HEAD_TIMESTAMP = datetime(2004, 1, 2, 14, 30, tzinfo=UTC)  # earliest data for every instrument
TRADE_SIZE_LOTS = Decimal("0.6")  # average trade size, in quote-size lots (bar "count" field)
WHAT_TO_SHOW = {
    "TRADES",
    "MIDPOINT",
    "BID",
    "ASK",
    "BID_ASK",
    "ADJUSTED_LAST",
    "HISTORICAL_VOLATILITY",
    "OPTION_IMPLIED_VOLATILITY",
}

BAR_SIZES: dict[str, int] = {
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": 86400,
    "1 week": 7 * 86400,
    "1 month": 30 * 86400,
    # The spellings IB's own 321 lists as legal for weeks and months.
    "1w": 7 * 86400,
    "1m": 30 * 86400,
}
# IB's error 321 names the legal bar sizes.
LEGAL_BAR_SIZES = (
    "1 secs, 5 secs, 10 secs, 15 secs, 30 secs, 1 min, 2 mins, 3 mins, 5 mins, 10 mins, 15 mins, 20 mins, "
    "30 mins, 1 hour, 2 hours, 3 hours, 4 hours, 8 hours, 1 day, 1W, 1M"
)
DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 31 * 86400, "Y": 366 * 86400}
MAX_BARS = 20_000


@dataclass
class Bar:
    start: datetime  # UTC, or midnight of the session date for daily+ bars
    daily: bool
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    wap: Decimal
    count: int


def parse_duration(text: str) -> tuple[int, str]:
    """'5 D' -> (5, 'D'); units S, D, W, M, Y."""
    num, _, unit = text.strip().partition(" ")
    unit = unit.strip().upper()
    if unit not in DURATION_UNITS or not num.isdigit() or int(num) <= 0:
        raise ValueError(f"bad duration {text!r}")
    return int(num), unit


def parse_end(text: str) -> tuple[datetime, bool]:
    """'' -> (now, True); 'YYYYMMDD HH:MM:SS[ TZ]' or 'YYYYMMDD-HH:MM:SS' (UTC).

    The flag says whether the time zone was explicit; without one IB assumes the login time zone (UTC
    here) and warns (2174)."""
    text = text.strip()
    if not text:
        return datetime.now(UTC), True
    if "-" in text and " " not in text:
        return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC), True
    parts = text.split()
    tz = ZoneInfo(parts[2]) if len(parts) > 2 else UTC
    end = datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)
    return end, len(parts) > 2


def _session(inst: Instrument, day: date, rth: bool) -> tuple[int, int] | None:
    regular, extended = session_minutes(inst, day)
    return regular if rth else extended


def _to_bar(inst: Instrument, start: datetime, daily: bool, m: Minute, what: str) -> Bar:
    tick = inst.min_tick
    half = float(tick) * inst.spread_ticks / 2
    o, h, lo, c = m.open, m.high, m.low, m.close
    if what == "BID":
        o, h, lo, c = o - half, h - half, lo - half, c - half
    elif what == "ASK":
        o, h, lo, c = o + half, h + half, lo + half, c + half
    elif what == "BID_ASK":  # IB: average bid, max ask, min bid, average ask
        o, h, lo, c = (o + c) / 2 - half, h + half, lo - half, (o + c) / 2 + half
    elif what in ("HISTORICAL_VOLATILITY", "OPTION_IMPLIED_VOLATILITY"):
        vol = inst.annual_vol * (1.1 if what == "OPTION_IMPLIED_VOLATILITY" else 1.0)
        rng = (h - lo) / c if c else 0.0
        values = [Decimal(str(round(vol * (1 + k * rng), 6))) for k in (0.5, 2, 0, 1)]
        return Bar(start, daily, *values, Decimal(-1), values[3], -1)
    px = [max(tick, round_to_tick(Decimal(str(round(v, 8))), tick)) for v in (o, h, lo, c)]
    o_, h_, l_, c_ = px
    h_, l_ = max(h_, o_, c_), min(l_, o_, c_)
    trades = what in ("TRADES", "ADJUSTED_LAST")
    volume = Decimal(int(m.volume)) if trades else Decimal(-1)
    count = int(volume / (TRADE_SIZE_LOTS * inst.lot)) if trades else -1
    wap = round_to_tick((h_ + l_ + c_) / 3, tick)
    return Bar(start, daily, o_, h_, l_, c_, volume, wap, count)


def _last_session_end(inst: Instrument, end: datetime, rth: bool, tz: ZoneInfo) -> datetime | None:
    """The end of the newest session that started before ``end`` (looking back up to ten days)."""
    day = end.astimezone(tz).date()
    for _ in range(10):
        session = _session(inst, day, rth)
        if session is not None and utc_of(day, session[0], tz) < end:
            return min(end, _session_end(day, session, tz))
        day -= timedelta(days=1)
    return None


def _has_session(inst: Instrument, start: datetime, end: datetime, rth: bool, tz: ZoneInfo) -> bool:
    day = start.astimezone(tz).date()
    while day <= end.astimezone(tz).date():
        session = _session(inst, day, rth)
        if session is not None and utc_of(day, session[0], tz) < end and _session_end(day, session, tz) > start:
            return True
        day += timedelta(days=1)
    return False


def _session_end(day: date, session: tuple[int, int], tz: ZoneInfo) -> datetime:
    return utc_of(day, session[1], tz) if session[1] < MINUTES else utc_of(day + timedelta(days=1), 0, tz)


def make_bars(
    market: Market,
    inst: Instrument,
    end: datetime,
    duration: tuple[int, str],
    bar_s: int,
    rth: bool,
    what: str,
    now: datetime | None = None,
) -> list[Bar]:
    now = now or datetime.now(UTC)
    end = min(end, now)  # no bar from the future
    path = market.path(inst)
    tz = ZoneInfo(inst.time_zone)
    n, unit = duration
    # Outside trading hours the window ends with the last session, as IB returns the latest data
    # available rather than nothing (a "1 D" request on a Sunday gives Friday).
    last = _last_session_end(inst, end, rth, tz)
    span = timedelta(seconds=n * DURATION_UNITS[unit])
    if last is not None and last < end and not _has_session(inst, end - span, end, rth, tz):
        end = last
    end_local = end.astimezone(tz)
    start = end - timedelta(seconds=n * DURATION_UNITS[unit])
    start = max(start, HEAD_TIMESTAMP)
    daily = bar_s >= 86400
    estimate = (end - start).total_seconds() / (86400 if daily else bar_s)
    if estimate > MAX_BARS * (3 if daily else 1.5):
        raise OverflowError("too many bars")
    bars: list[Bar] = []
    # The minute ``end`` falls in has only partly happened: its bars hold what happened up to ``end``.
    end_day, end_minute, end_frac = path.local_day_minute(end)
    sub_minute = bar_s < 60
    day = start.astimezone(tz).date()
    while day <= end_local.date():
        session = _session(inst, day, rth)
        if session is not None:
            first_utc = utc_of(day, session[0], tz)
            if day == end_day:
                upto = max(session[0], min(session[1], end_minute))
                running = session[0] <= end_minute < session[1] and end_frac > 0
            else:
                upto = min(session[1], _minute_index(end, day, tz))
                running = False
            from_ = _minute_index(start, day, tz, floor=sub_minute) if start > utc_of(day, 0, tz) else 0
            first = max(session[0], from_)
            now_minute = _Partial(end_minute, end) if running and end_minute >= first else None
            if (upto > first or now_minute is not None) and first_utc < end:
                if daily:
                    if not (unit == "S" and first_utc < start):
                        midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
                        whole = path.aggregate(day, session[0], upto) if upto > session[0] else None
                        m = _join(whole, _partial_minute(path, day, now_minute, tz))
                        if m is not None:
                            bars.append(_to_bar(inst, midnight, True, m, what))
                else:
                    bars += _intraday(path, inst, day, first, upto, session[0], bar_s, what, tz, now_minute)
        if len(bars) > MAX_BARS:
            raise OverflowError("too many bars")
        day += timedelta(days=1)
    if sub_minute:
        bars = [b for b in bars if b.start >= start]  # bars of the window only, as for minute bars
    if bar_s > 86400:
        bars = _roll_up(bars, bar_s)
    return bars


@dataclass(frozen=True)
class TradingSession:
    start: datetime  # UTC
    end: datetime  # UTC
    day: date  # the session's reference date


def make_schedule(
    market: Market, inst: Instrument, end: datetime, duration: tuple[int, str], rth: bool, now: datetime | None = None
) -> list[TradingSession]:
    """The sessions of the days that have daily bars in the same window (whatToShow SCHEDULE), so a
    schedule never lists a day the bars leave out (weekends, holidays, a session not yet open)."""
    tz = ZoneInfo(inst.time_zone)
    out = []
    for bar in make_bars(market, inst, end, duration, 86400, rth, "MIDPOINT", now=now):
        day = bar.start.date()
        session = _session(inst, day, rth)
        if session is not None:
            out.append(TradingSession(utc_of(day, session[0], tz), _session_end(day, session, tz), day))
    return out


def _minute_index(t: datetime, day: date, tz: ZoneInfo, floor: bool = False) -> int:
    """Minutes from ``day``'s local midnight to ``t`` (rounded up, or down), clamped to the day."""
    seconds = (t - utc_of(day, 0, tz)).total_seconds()
    minutes = seconds // 60 if floor else -(-seconds // 60)
    return int(max(0, min(MINUTES, minutes)))


@dataclass(frozen=True)
class _Partial:
    minute: int  # the minute of the day that ``end`` falls in
    end: datetime


def _partial_minute(path: PricePath, day: date, partial: _Partial | None, tz: ZoneInfo) -> Minute | None:
    if partial is None:
        return None
    return path.until(path.minute(day, partial.minute), utc_of(day, partial.minute, tz), partial.end, 60)


def _join(a: Minute | None, b: Minute | None) -> Minute | None:
    """Two consecutive stretches of the path as one."""
    if a is None or b is None:
        return a or b
    return Minute(a.open, max(a.high, b.high), min(a.low, b.low), b.close, a.volume + b.volume)


def _intraday(
    path: PricePath,
    inst: Instrument,
    day: date,
    first: int,
    last: int,
    session_start: int,
    bar_s: int,
    what: str,
    tz: ZoneInfo,
    partial: _Partial | None = None,
) -> list[Bar]:
    """Bars of minutes ``first``..``last - 1`` of ``day``, then those of the minute in progress (``partial``)."""
    out: list[Bar] = []
    if bar_s < 60:
        parts = 60 // bar_s
        for i in range(first, last):
            t0 = utc_of(day, i, tz)
            for k, m in enumerate(path.split(day, i, parts)):
                out.append(_to_bar(inst, t0 + timedelta(seconds=k * bar_s), False, m, what))
        if partial is not None:
            t0 = utc_of(day, partial.minute, tz)
            elapsed = (partial.end - t0).total_seconds()
            for k, sub in enumerate(path.split(day, partial.minute, parts)):
                if k * bar_s >= elapsed:
                    break
                t = t0 + timedelta(seconds=k * bar_s)
                if (k + 1) * bar_s > elapsed:
                    sub = path.until(sub, t, partial.end, bar_s)
                out.append(_to_bar(inst, t, False, sub, what))
        return out
    step = bar_s // 60
    bucket = first // step * step
    stop = last if partial is None else max(last, partial.minute + 1)
    while bucket < stop:
        # IB bars are fixed intervals of the clock: the first one covers its whole interval, not the tail.
        a, b = max(bucket, session_start), min(bucket + step, last)
        bar = path.aggregate(day, a, b) if b > a else None
        if partial is not None and bucket <= partial.minute < bucket + step:
            bar = _join(bar, _partial_minute(path, day, partial, tz))
        if bar is not None:
            out.append(_to_bar(inst, utc_of(day, a, tz), False, bar, what))
        bucket += step
    return out


def _roll_up(days: list[Bar], bar_s: int) -> list[Bar]:
    """Weekly or monthly bars from daily ones (labelled with their first session day)."""
    out: list[Bar] = []
    keys: list[tuple[int, int]] = []
    for b in days:
        key = tuple(b.start.isocalendar()[:2]) if bar_s == 7 * 86400 else (b.start.year, b.start.month)
        if keys and keys[-1] == key:
            last = out[-1]
            last.high, last.low, last.close = max(last.high, b.high), min(last.low, b.low), b.close
            if b.volume >= 0:
                last.volume += b.volume
                last.count += b.count
            last.wap = b.wap
        else:
            out.append(Bar(b.start, True, b.open, b.high, b.low, b.close, b.volume, b.wap, b.count))
            keys.append(key)
    return out


def format_bar_time(bar_start: datetime, daily: bool, format_date: int, tz_name: str) -> str:
    if daily:
        return bar_start.strftime("%Y%m%d")
    if format_date == 2:
        return str(int(bar_start.timestamp()))
    local = bar_start.astimezone(ZoneInfo(tz_name))
    return f"{local.strftime('%Y%m%d %H:%M:%S')} {tz_name}"
