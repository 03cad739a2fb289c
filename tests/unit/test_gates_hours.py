"""The trading-hours gate at the exact edges of the session, with its messages and details.

2026-11-24 is a Tuesday: NYSE opens 14:30 UTC and closes 21:00 UTC; on-close orders stop 10 minutes
before the close.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ibkrgw.errors import ErrorCode
from orders import gates
from orders.gates import GateBlocked
from tests.unit.builders import contract, order

OPEN = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
CLOSE = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
AAPL = contract(primary_exchange="NASDAQ")


def details(now: datetime) -> dict:
    """The session the refusal names: today's until its close, then the next one."""
    day = timedelta(days=1 if now >= CLOSE else 0)
    return {
        "gate": "validation",
        "calendar": "XNYS",
        "session_open": (OPEN + day).isoformat(),
        "session_close": (CLOSE + day).isoformat(),
    }


@pytest.fixture(autouse=True)
def exchange_hours(settings):
    settings.TRADING_HOURS = "exchange"


def refused(request, now) -> GateBlocked:
    with pytest.raises(GateBlocked) as excinfo:
        gates.gate_trading_hours(request, AAPL, now)
    assert excinfo.value.code == ErrorCode.MARKET_CLOSED
    assert excinfo.value.http_status == 422
    assert excinfo.value.gate == "validation"
    assert excinfo.value.details == details(now)
    return excinfo.value


def test_a_market_order_for_the_day_needs_the_session():
    gates.gate_trading_hours(order(), AAPL, OPEN)
    gates.gate_trading_hours(order(), AAPL, CLOSE - US)
    for now in (OPEN - US, CLOSE):
        exc = refused(order(), now)
        assert exc.message == (
            "The market is closed: a MKT DAY order would not execute now. Set outside_rth, use a "
            "limit order, or wait for the open."
        )


def test_an_opening_order_is_taken_only_before_the_open():
    opening = order(tif="OPG")
    gates.gate_trading_hours(opening, AAPL, OPEN - US)
    exc = refused(opening, OPEN)
    assert exc.message == "Opening orders (tif OPG) are accepted only before the open."


@pytest.mark.parametrize("fields", [{"order_type": "MOC"}, {"order_type": "LOC", "limit_price": Decimal("190")}])
def test_on_close_orders_stop_ten_minutes_before_the_close(fields):
    request = order(**fields)
    gates.gate_trading_hours(request, AAPL, CLOSE - timedelta(minutes=10) - US)
    for now in (CLOSE - timedelta(minutes=10), OPEN - US):
        exc = refused(request, now)
        assert exc.message == (
            f"{fields['order_type']} orders must reach the exchange at least 10 minutes before today's close."
        )


def test_without_exchange_hours_nothing_is_checked(settings):
    settings.TRADING_HOURS = "always"
    gates.gate_trading_hours(order(), AAPL, CLOSE)
