"""Exchange trading hours, from the `exchange_calendars` library.

Which calendar a contract follows is decided here for the order gates
(`orders.gates.gate_trading_hours`). The simulated gateway keeps its own copy of the mapping
(`brokers/sim/calendar.py`, same calendars) since it imports nothing of the gateway.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from brokers.adapter import ContractInfo

US_EQUITY_EXCHANGES = {"NASDAQ", "NYSE", "ARCA", "BATS", "IEX", "AMEX", "NYSEARCA", "ISLAND", "CBOE", "SMART"}
FUTURES_EXCHANGES = {"CME", "CBOT", "NYMEX", "COMEX", "GLOBEX", "ECBOT"}
# NYSE stops accepting market-on-close orders 10 minutes before the close.
MOC_CUTOFF = timedelta(minutes=10)


def calendar_name(contract: ContractInfo) -> str | None:
    """The exchange calendar a contract trades on, or None when we don't know it (no hours check)."""
    if contract.sec_type == "CASH":
        return "24/5"
    if contract.sec_type == "CRYPTO":
        return "24/7"
    if contract.sec_type in ("FUT", "FOP") or contract.exchange in FUTURES_EXCHANGES:
        return "us_futures"
    venue = contract.primary_exchange or contract.exchange
    if contract.currency == "CAD" or venue in ("TSE", "TSX", "VENTURE"):
        return "XTSE"
    if contract.currency == "USD" and (venue in US_EQUITY_EXCHANGES or contract.sec_type in ("IND", "FUND", "BOND")):
        return "XNYS"
    return None


@functools.lru_cache(maxsize=16)
def _calendar(name: str):
    import exchange_calendars

    return exchange_calendars.get_calendar(name)


@dataclass(frozen=True)
class MarketState:
    calendar: str
    open_now: bool
    session_open: datetime | None  # the session in force or next
    session_close: datetime | None


def market_state(contract: ContractInfo, now: datetime) -> MarketState | None:
    name = calendar_name(contract)
    if name is None:
        return None
    import pandas as pd

    cal = _calendar(name)
    minute = pd.Timestamp(now).tz_convert("UTC").floor("min")
    if minute < cal.first_minute or minute > cal.last_minute:
        return None
    open_now = bool(cal.is_open_on_minute(minute))
    session = cal.minute_to_session(minute, direction="next")
    return MarketState(
        calendar=name,
        open_now=open_now,
        session_open=cal.session_open(session).to_pydatetime(),
        session_close=cal.session_close(session).to_pydatetime(),
    )


def is_open(contract: ContractInfo, now: datetime) -> bool:
    """Is the contract's regular session open at `now`? Unknown calendars count as open."""
    state = market_state(contract, now)
    return True if state is None else state.open_now
