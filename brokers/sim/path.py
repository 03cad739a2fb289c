"""Price paths as pure functions of (seed, instrument, time).

Every price the simulator shows, in history or live, is read off one path per instrument, so the same
request gives the same bars on every run and on every gateway started with the same seed, and today's
bars agree with the live ticks.

* Daily level: the log price at the end of each calendar day is a mean-reverting sum of seeded daily
  shocks (an AR(1) process around the instrument's base price, truncated to ``WINDOW`` days), so
  prices stay in a realistic band around the base for any date.
* Intraday: each day is 1,440 one-minute steps, a seeded Brownian bridge between the previous and the
  current daily level. The size of each step follows the instrument's session: full volatility in
  the regular session, less in extended hours and overnight (``SESSION_WEIGHTS``), so a market that
  is closed barely moves.
* Volume: seeded per-minute volumes shaped by the same session profile (U-shaped in the regular
  session); daily volume is the sum of the minutes, so bar sizes agree.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from .calendar import is_holiday
from .universe import Instrument

EPOCH = date(2026, 1, 1)  # day index 0; any date works, this one keeps the arrays small
WINDOW = 400  # days of shocks that make up one daily level
PHI = 0.985  # daily mean reversion of the log price towards the base price
MINUTES = 1440
BLOCK = 512  # daily shocks are drawn in blocks of this many days
# Relative volatility of a minute in each session phase; a closed market keeps a trace of movement.
SESSION_WEIGHTS = {"regular": 1.0, "extended": 0.35, "overnight": 0.12, "closed": 0.03}
DAILY_VOLUME_LOTS = 50_000  # average daily volume, in quote-size lots


@dataclass(frozen=True)
class Minute:
    """One minute of the path: prices at its start and end, intra-minute extremes, volume."""

    open: float
    high: float
    low: float
    close: float
    volume: float


def session_minutes(inst: Instrument, day: date) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(regular, extended) minute-of-day ranges in the instrument's own time zone, or None when closed.

    Regular sessions: US stocks 09:30-16:00 (extended 04:00-20:00), futures 09:30-16:00 (extended
    18:00 the day before to 17:00), FX and funds on weekdays, crypto always.
    """
    weekday = day.weekday()
    if inst.hours == "crypto":
        return (0, MINUTES), (0, MINUTES)
    if is_holiday(inst, day):
        return None, None
    if inst.hours in ("fx", "future"):  # Sunday evening to Friday 17:00 New York time
        sunday_open = 17 * 60 + 15 if inst.hours == "fx" else 18 * 60
        if weekday == 5:
            return None, None
        if weekday == 6:
            return None, (sunday_open, MINUTES)
        day_end = 17 * 60 if weekday == 4 else MINUTES
        if inst.hours == "fx":
            return (0, day_end), (0, day_end)
        return (9 * 60 + 30, 16 * 60), (0, day_end)
    if weekday >= 5:
        return None, None
    if inst.hours == "fund" or inst.sec_type in ("IND", "BOND"):
        return (9 * 60 + 30, 16 * 60), (9 * 60 + 30, 16 * 60)
    return (9 * 60 + 30, 16 * 60), (4 * 60, 20 * 60)


def _weights(inst: Instrument, day: date) -> tuple[np.ndarray, np.ndarray]:
    """(volatility weight, volume weight) per minute of ``day``."""
    regular, extended = session_minutes(inst, day)
    vol = np.full(MINUTES, SESSION_WEIGHTS["closed"])
    volume = np.zeros(MINUTES)
    if extended:
        vol[extended[0] : extended[1]] = SESSION_WEIGHTS["extended"]
        volume[extended[0] : extended[1]] = 0.1
    if regular:
        a, b = regular
        vol[a:b] = SESSION_WEIGHTS["regular"]
        x = np.linspace(-1, 1, b - a)
        volume[a:b] = 0.6 + 1.4 * x * x  # busy open and close, quiet lunch
    if inst.hours in ("fx", "crypto") and regular:
        vol[: 7 * 60] = np.minimum(vol[: 7 * 60], SESSION_WEIGHTS["overnight"] * 4)  # calmer Asian hours
    return vol, volume


class PricePath:
    def __init__(self, seed: int, inst: Instrument) -> None:
        self.seed = seed
        self.inst = inst
        self.base = float(inst.base_price)
        self.tz = ZoneInfo(inst.time_zone)
        self.daily_sigma = inst.annual_vol / math.sqrt(252)
        self._shocks: dict[int, np.ndarray] = {}
        self._levels: dict[int, float] = {}
        self._days = functools.lru_cache(maxsize=64)(self._day)
        self._decay = PHI ** np.arange(WINDOW)

    # -- daily levels
    def _block(self, block: int) -> np.ndarray:
        """Daily shocks for days ``block * BLOCK`` .. ``block * BLOCK + BLOCK - 1`` (seeded per block)."""
        shocks = self._shocks.get(block)
        if shocks is None:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.inst.con_id, 1, block + 1_000_000])
            shocks = self._shocks[block] = rng.standard_normal(BLOCK) * self.daily_sigma
        return shocks

    def level(self, day: date) -> float:
        """Log price (relative to the base) at the end of ``day`` in the instrument's time zone."""
        index = (day - EPOCH).days
        value = self._levels.get(index)
        if value is None:
            first = index - WINDOW + 1
            blocks = range(first // BLOCK, index // BLOCK + 1)
            shocks = np.concatenate([self._block(b) for b in blocks])
            offset = first - blocks[0] * BLOCK
            window = shocks[offset : offset + WINDOW][::-1]  # newest first
            value = self._levels[index] = float(self._decay @ window)
        return value

    # -- minutes
    def _day(self, day: date) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per minute of ``day``: log price at the minute's end, high and low offsets, volume."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.inst.con_id, 2, (day - EPOCH).days + 1_000_000])
        vol_w, volume_w = _weights(self.inst, day)
        minute_sigma = self.daily_sigma * vol_w / math.sqrt(float((vol_w**2).sum()))
        walk = np.cumsum(rng.standard_normal(MINUTES) * minute_sigma)
        frac = np.arange(1, MINUTES + 1) / MINUTES
        start, end = self.level(day - timedelta(days=1)), self.level(day)
        logp = start + frac * (end - start) + walk - frac * walk[-1]
        wiggle = np.abs(rng.standard_normal((2, MINUTES))) * minute_sigma * 0.6
        lots = DAILY_VOLUME_LOTS * self.inst.lot
        volume = np.floor(volume_w / max(volume_w.sum(), 1e-9) * lots * rng.lognormal(0, 0.35, MINUTES))
        return logp, wiggle[0], wiggle[1], volume

    def local_day_minute(self, t: datetime) -> tuple[date, int, float]:
        local = t.astimezone(self.tz)
        seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return local.date(), int(seconds // 60), (seconds % 60) / 60

    def minute(self, day: date, index: int) -> Minute:
        logp, up, down, volume = self._days(day)
        prev = logp[index - 1] if index else self.level(day - timedelta(days=1))
        o, c = self.base * math.exp(prev), self.base * math.exp(logp[index])
        hi = max(o, c) * math.exp(up[index])
        lo = min(o, c) * math.exp(-down[index])
        return Minute(o, hi, lo, c, float(volume[index]))

    def aggregate(self, day: date, first: int, last: int) -> Minute:
        """Open, high, low, close and volume of minutes ``first``..``last - 1`` of ``day``."""
        logp, up, down, volume = self._days(day)
        prev = logp[first - 1] if first else self.level(day - timedelta(days=1))
        seg = logp[first:last]
        o, c = self.base * math.exp(prev), self.base * math.exp(seg[-1])
        hi = self.base * math.exp(float(np.max(np.maximum(seg, np.append(prev, seg[:-1])) + up[first:last])))
        lo = self.base * math.exp(float(np.min(np.minimum(seg, np.append(prev, seg[:-1])) - down[first:last])))
        return Minute(o, max(hi, o, c), min(lo, o, c), c, float(volume[first:last].sum()))

    def split(self, day: date, index: int, parts: int) -> list[Minute]:
        """Minute ``index`` cut into ``parts`` equal sub-bars (for bars shorter than a minute)."""
        m = self.minute(day, index)
        day_key = (day - EPOCH).days & 0xFFFFFFFF  # seeds must not be negative (days before EPOCH)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.inst.con_id, 4, day_key, index])
        points = np.linspace(m.open, m.close, parts + 1)
        points[1:-1] += rng.standard_normal(parts - 1) * (m.high - m.low) * 0.2
        points = np.clip(points, m.low, m.high)
        out = []
        for k in range(parts):
            o, c = float(points[k]), float(points[k + 1])
            span = abs(rng.standard_normal()) * (m.high - m.low) * 0.1
            out.append(Minute(o, min(max(o, c) + span, m.high), max(min(o, c) - span, m.low), c, m.volume / parts))
        return out

    def until(self, bar: Minute, since: datetime, t: datetime, seconds: float) -> Minute:
        """The part of ``bar`` (which covers ``seconds`` from ``since``) that has happened by ``t``: it opens
        as the bar, closes at the price at ``t``, and its high and low are those of the prices seen so far
        (every quarter second, like the live ticks), all kept within the whole bar's range."""

        def clamp(p: float) -> float:
            return min(max(p, bar.low), bar.high)

        elapsed = (t - since).total_seconds()
        seen = [bar.open] + [clamp(self.price(since + timedelta(seconds=k / 4))) for k in range(1, int(elapsed * 4))]
        close = clamp(self.price(t))
        seen.append(close)
        return Minute(bar.open, max(seen), min(seen), close, bar.volume * min(1.0, elapsed / seconds))

    def price(self, t: datetime) -> float:
        """The path's price at ``t``: interpolated within the minute, with a seeded sub-minute jitter."""
        day, index, frac = self.local_day_minute(t)
        m = self.minute(day, index)
        jitter = np.random.default_rng([self.seed & 0xFFFFFFFF, self.inst.con_id, 3, int(t.timestamp() * 4)])
        noise = float(jitter.standard_normal()) * abs(m.high - m.low) * 0.15
        return m.open + (m.close - m.open) * frac + noise

    def volume_until(self, t: datetime, since_minute: int = 0) -> float:
        """Volume traded on ``t``'s local day from ``since_minute`` up to ``t``."""
        day, index, frac = self.local_day_minute(t)
        volume = self._days(day)[3]
        return float(volume[since_minute:index].sum() + volume[index] * frac) if index >= since_minute else 0.0


def utc_of(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock minute of ``day`` in ``tz``."""
    return datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=tz).astimezone(UTC)
