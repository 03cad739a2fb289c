"""Historical bars and the request fields they are parsed from."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from .market import Market
from .universe import Instrument, round_to_tick

# ---------------------------------------------------------------- historical bars

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
}
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


def parse_duration(text: str) -> int:
    num, _, unit = text.strip().partition(" ")
    if unit.upper() not in DURATION_UNITS:
        raise ValueError(f"bad duration {text!r}")
    return int(num) * DURATION_UNITS[unit.upper()]


def parse_end(text: str) -> datetime:
    """'' -> now; 'YYYYMMDD HH:MM:SS[ TZ]' or 'YYYYMMDD-HH:MM:SS' (UTC)."""
    text = text.strip()
    if not text:
        return datetime.now(UTC)
    if "-" in text and " " not in text:
        return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    parts = text.split()
    tz = ZoneInfo(parts[2]) if len(parts) > 2 else UTC
    return datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)


def in_session(inst: Instrument, local: datetime, rth: bool) -> bool:
    wd, minutes = local.weekday(), local.hour * 60 + local.minute
    if inst.hours == "crypto":
        return True
    if inst.hours == "fx":
        return wd < 5 or (wd == 6 and minutes >= 17 * 60 + 15)
    if inst.hours == "future":
        if rth:
            return wd < 5 and 9 * 60 + 30 <= minutes < 16 * 60
        return (wd < 4 or (wd == 4 and minutes < 17 * 60) or (wd == 6 and minutes >= 18 * 60)) and not (
            17 * 60 <= minutes < 18 * 60
        )
    if wd >= 5:
        return False
    if rth or inst.hours == "fund":
        return 9 * 60 + 30 <= minutes < 16 * 60
    return 4 * 60 <= minutes < 20 * 60


def make_bars(
    market: Market, inst: Instrument, end: datetime, duration_s: int, bar_s: int, rth: bool, what: str
) -> list[Bar]:
    """Bars ending at ``end``; the newest bar closes at the current last price.

    Prices are walked backwards from the current quote with per-bar seeded noise, so
    a given (seed, instrument, bar size, bar time) always produces the same move.
    """
    tz = ZoneInfo(inst.time_zone)
    daily = bar_s >= 86400
    starts: list[datetime] = []
    if daily:
        day = end.astimezone(tz).date()
        first = (end - timedelta(seconds=duration_s)).astimezone(tz).date()
        while day > first or not starts:
            if inst.hours == "crypto" or day.weekday() < 5:
                if bar_s == 7 * 86400:
                    key = day - timedelta(days=day.weekday())
                elif bar_s >= 30 * 86400:
                    key = day.replace(day=1)
                else:
                    key = day
                start = datetime(key.year, key.month, key.day, tzinfo=tz)
                if not starts or starts[-1] != start:
                    starts.append(start)
            day -= timedelta(days=1)
            if len(starts) > MAX_BARS or (end.date() - day).days > 40 * 366:
                break
    else:
        # Outside trading hours, anchor on the end of the last session (IB returns the
        # latest available data rather than nothing), so results don't depend on the weekday.
        block = int(end.timestamp()) // 900 * 900
        for _ in range(8 * 96):
            if in_session(inst, datetime.fromtimestamp(block, UTC).astimezone(tz), rth):
                break
            block -= 900
        end_ts = min(int(end.timestamp()), block + 900)
        t = (end_ts - 1) // bar_s * bar_s if end_ts % bar_s == 0 else end_ts // bar_s * bar_s
        lo = end_ts - duration_s
        while t >= lo:
            start = datetime.fromtimestamp(t, UTC)
            if in_session(inst, start.astimezone(tz), rth):
                starts.append(start)
                if len(starts) > MAX_BARS:
                    break
            t -= bar_s
    if len(starts) > MAX_BARS:
        raise OverflowError("too many bars")
    quote = market.quote(inst.con_id)
    tick = inst.min_tick
    close = quote.last
    vol_scale = max(1.0, math.sqrt(bar_s / 60))
    bars: list[Bar] = []
    for start in starts:  # newest first
        rng = random.Random(f"{market.seed}:{inst.con_id}:{bar_s}:{int(start.timestamp())}")  # noqa: S311
        sigma = max(1.0, float(close) * 0.0006 * vol_scale / float(tick))
        open_ = max(tick, close - tick * round(rng.gauss(0, sigma)))
        high = max(open_, close) + tick * rng.randint(0, max(1, int(sigma / 2)))
        low = max(tick, min(open_, close) - tick * rng.randint(0, max(1, int(sigma / 2))))
        wap = round_to_tick((high + low + close) / 3, tick)
        count = rng.randint(10, 500)
        volume = Decimal(count * max(1, inst.lot // 10)) if what in ("TRADES", "ADJUSTED_LAST") else Decimal(-1)
        bars.append(Bar(start, daily, open_, high, low, close, volume, wap, count if volume >= 0 else -1))
        close = open_
    bars.reverse()
    return bars


def format_bar_time(bar_start: datetime, daily: bool, format_date: int, tz_name: str) -> str:
    if daily:
        return bar_start.strftime("%Y%m%d")
    if format_date == 2:
        return str(int(bar_start.timestamp()))
    local = bar_start.astimezone(ZoneInfo(tz_name))
    return f"{local.strftime('%Y%m%d %H:%M:%S')} {tz_name}"
