"""Exchange sessions for the simulator's instruments, from the ``exchange_calendars`` library.

The simulator keeps its own mapping from instrument to calendar (it is a separate server and imports
nothing of the gateway). Regular sessions come from the calendars (holidays and early closes included);
US stocks also have IB's extended session, 04:00-20:00 New York time on trading days, where orders
marked outsideRth may fill.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .universe import Instrument

NEW_YORK = ZoneInfo("America/New_York")
EXTENDED = (time(4, 0), time(20, 0))  # IB's pre-market start and after-hours end for US stocks


def calendar_name(inst: Instrument) -> str | None:
    if inst.sec_type == "CASH":
        return "24/5"
    if inst.sec_type == "CRYPTO":
        return "24/7"
    if inst.sec_type in ("FUT", "FOP"):
        return "us_futures"
    if inst.currency == "CAD":
        return "XTSE"
    if inst.currency == "USD":
        return "XNYS"
    return None


@functools.lru_cache(maxsize=16)
def _calendar(name: str):
    import exchange_calendars

    return exchange_calendars.get_calendar(name)


@functools.lru_cache(maxsize=64)
def _sessions_of_year(name: str, year: int) -> frozenset[date] | None:
    import pandas as pd

    cal = _calendar(name)
    first, last = pd.Timestamp(date(year, 1, 1)), pd.Timestamp(date(year, 12, 31))
    if first < cal.first_session or last > cal.last_session:
        return None
    return frozenset(d.date() for d in cal.sessions_in_range(first, last))


def is_holiday(inst: Instrument, day: date) -> bool:
    """A weekday on which the instrument's exchange does not open (e.g. Thanksgiving for US stocks)."""
    name = calendar_name(inst)
    if day.weekday() >= 5 or name not in ("XNYS", "XTSE", "us_futures"):
        return False
    sessions = _sessions_of_year(name, day.year)
    return sessions is not None and day not in sessions


@dataclass(frozen=True)
class SessionState:
    regular: bool  # the regular session is open
    extended: bool  # outsideRth orders may trade (the regular session or IB's extended hours)
    next_open: datetime | None  # the regular session in force or next (UTC)


def session_state(inst: Instrument, now: datetime) -> SessionState:
    """Where ``now`` falls for ``inst``; instruments without a calendar, or dates beyond it, are open."""
    name = calendar_name(inst)
    if name is None:
        return SessionState(True, True, None)
    import pandas as pd

    cal = _calendar(name)
    minute = pd.Timestamp(now).tz_convert("UTC").floor("min")
    if minute < cal.first_minute or minute > cal.last_minute:
        return SessionState(True, True, None)
    regular = bool(cal.is_open_on_minute(minute))
    session = cal.minute_to_session(minute, direction="next")
    next_open = cal.session_open(session).to_pydatetime()
    extended = regular
    if not regular and name == "XNYS" and inst.sec_type == "STK":
        local = now.astimezone(NEW_YORK)
        if cal.is_session(pd.Timestamp(local.date())):
            extended = EXTENDED[0] <= local.time() < EXTENDED[1]
    return SessionState(regular, extended, next_open)


def trading_hours(inst: Instrument, today: date, rth: bool) -> str:
    """A week of sessions in TWS's 'YYYYMMDD:HHMM-YYYYMMDD:HHMM;…' format."""
    out = []
    for n in range(7):
        d = today + timedelta(days=n)
        ds = d.strftime("%Y%m%d")
        if inst.hours == "crypto":
            out.append(f"{ds}:0000-{ds}:2359")
        elif d.weekday() >= 5:
            out.append(f"{ds}:CLOSED")
        elif rth or inst.hours == "fund":
            out.append(f"{ds}:0930-{ds}:1600")
        elif inst.hours in ("future", "fx"):
            prev = (d - timedelta(days=1)).strftime("%Y%m%d")
            out.append(f"{prev}:1800-{ds}:1700")
        else:
            out.append(f"{ds}:0400-{ds}:2000")
    return ";".join(out)


def session_end(inst: Instrument, now: datetime, outside_rth: bool) -> datetime | None:
    """When a DAY order placed at ``now`` expires: the close of the regular session in force or next (an
    early close included); for a US stock order marked outsideRth, the end of IB's extended session that
    day (20:00 New York). None for instruments without a calendar or dates beyond it."""
    name = calendar_name(inst)
    if name is None:
        return None
    import pandas as pd

    cal = _calendar(name)
    minute = pd.Timestamp(now).tz_convert("UTC").floor("min")
    if minute < cal.first_minute or minute > cal.last_minute:
        return None
    if outside_rth and name == "XNYS" and inst.sec_type == "STK":
        local = now.astimezone(NEW_YORK)
        day = local.date()
        if not (cal.is_session(pd.Timestamp(day)) and local.time() < EXTENDED[1]):
            day = cal.date_to_session(pd.Timestamp(day + timedelta(days=1)), direction="next").date()
        return datetime.combine(day, EXTENDED[1], NEW_YORK)
    session = cal.minute_to_session(minute, direction="next")
    return cal.session_close(session).to_pydatetime()
