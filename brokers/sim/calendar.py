"""Exchange sessions for the simulator's instruments."""

from __future__ import annotations

from datetime import date, timedelta

from .universe import Instrument


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
