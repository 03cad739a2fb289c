"""Trading hours from exchange calendars: orders that cannot execute at that moment are refused."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from brokers.adapter import ContractInfo
from brokers.hours import calendar_name
from ibkrgw.errors import GatewayError
from orders.gates import gate_trading_hours
from orders.types import OrderRequest

AAPL = ContractInfo(
    con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD", primary_exchange="NASDAQ"
)
ES = ContractInfo(con_id=1, symbol="ES", sec_type="FUT", exchange="CME", currency="USD", expiry="20261218")
EURUSD = ContractInfo(con_id=12087792, symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="USD")

# 2026-11-24 is a Tuesday: NYSE opens 14:30 UTC and closes 21:00 UTC.
BEFORE_OPEN = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
MIDDAY = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
NEAR_CLOSE = datetime(2026, 11, 24, 20, 55, tzinfo=UTC)
SATURDAY = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
THANKSGIVING = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)


def _order(**kw) -> OrderRequest:
    base = {"symbol": "AAPL", "action": "BUY", "quantity": Decimal(1), "order_type": "MKT"}
    return OrderRequest(**{**base, **kw})


@pytest.fixture(autouse=True)
def exchange_hours(settings):
    settings.TRADING_HOURS = "exchange"


def _code(request, contract, now):
    try:
        gate_trading_hours(request, contract, now)
    except GatewayError as exc:
        return exc.code
    return None


def test_contracts_map_to_their_calendars():
    assert calendar_name(AAPL) == "XNYS"
    assert calendar_name(ES) == "us_futures"
    assert calendar_name(EURUSD) == "24/5"


@pytest.mark.parametrize("now", [BEFORE_OPEN, SATURDAY, THANKSGIVING])
def test_market_day_order_outside_hours_is_refused(now):
    assert _code(_order(), AAPL, now) == "market_closed"


def test_market_order_in_session_or_outside_rth_passes():
    assert _code(_order(), AAPL, MIDDAY) is None
    assert _code(_order(outside_rth=True), AAPL, BEFORE_OPEN) is None
    assert _code(_order(order_type="LMT", limit_price=Decimal(190)), AAPL, BEFORE_OPEN) is None


def test_opening_order_only_before_the_open():
    assert _code(_order(tif="OPG"), AAPL, BEFORE_OPEN) is None
    assert _code(_order(tif="OPG"), AAPL, MIDDAY) == "market_closed"


def test_market_on_close_refused_after_the_cutoff_and_when_closed():
    assert _code(_order(order_type="MOC"), AAPL, MIDDAY) is None
    assert _code(_order(order_type="MOC"), AAPL, NEAR_CLOSE) == "market_closed"
    assert _code(_order(order_type="MOC"), AAPL, SATURDAY) == "market_closed"


def test_fx_trades_through_the_us_holiday_and_closes_at_the_weekend():
    assert _code(_order(symbol="EUR"), EURUSD, THANKSGIVING) is None
    assert _code(_order(symbol="EUR"), EURUSD, SATURDAY) == "market_closed"


def test_the_simulated_market_never_closes(settings):
    settings.TRADING_HOURS = "always"
    assert _code(_order(), AAPL, SATURDAY) is None
