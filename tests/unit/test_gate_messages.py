"""Every refusal tells the caller, in words, what to change: the exact message of each gate."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from orders import gates
from orders.gates import GateBlocked
from tests.unit.builders import NOW, contract, order, preview, quote

D = Decimal
pytestmark = pytest.mark.usefixtures("limits", "frozen_clock")


def message(check, *args) -> str:
    with pytest.raises(GateBlocked) as excinfo:
        check(*args)
    return excinfo.value.message


SHAPE = [
    ({"quantity": D("0")}, "quantity must be positive."),
    ({"order_type": "LMT"}, "LMT orders need limit_price."),
    ({"limit_price": D("1")}, "MKT orders take no limit_price."),
    ({"order_type": "STP"}, "STP orders need stop_price."),
    ({"stop_price": D("1")}, "MKT orders take no stop_price."),
    ({"order_type": "TRAIL"}, "TRAIL orders need exactly one of trail_amount or trail_percent."),
    ({"trail_amount": D("1")}, "MKT orders take no trail_amount/trail_percent."),
    ({"order_type": "LMT", "limit_price": D("-1")}, "limit_price must be positive."),
    ({"order_type": "TRAIL", "trail_percent": D("100")}, "trail_percent must be below 100."),
    ({"order_type": "MOC", "tif": "GTC"}, "MOC orders must have tif DAY."),
    (
        {"order_type": "STP", "stop_price": D("1"), "tif": "OPG"},
        "tif OPG is only for MKT and LMT orders (market/limit on open).",
    ),
    ({"sec_type": "FUT", "quantity": D("1.5")}, "FUT quantities must be whole numbers."),
    ({"sec_type": "OPT", "quantity": D("1")}, "Options need expiry, strike and right (or con_id)."),
]


@pytest.mark.parametrize(("fields", "expected"), SHAPE, ids=[m for _, m in SHAPE])
def test_order_shape_messages(fields, expected):
    assert message(gates.gate_order_shape, order(**fields)) == expected


BRACKET = {"order_type": "LMT", "limit_price": D("100"), "take_profit": D("110"), "stop_loss": D("90")}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tif": "IOC"}, "A bracket's entry must be a MKT or LMT order with tif DAY or GTC."),
        ({"client_order_id": "x" * 62}, "A bracket's client_order_id may have at most 61 characters."),
        ({"stop_loss": D("0")}, "stop_loss must be positive."),
        ({"take_profit": D("99")}, "take_profit must be above the entry price 100."),
        ({"stop_loss": D("101")}, "stop_loss must be below the entry price 100."),
        (
            {"action": "SELL", "take_profit": D("101"), "stop_loss": D("110")},
            "take_profit must be below the entry price 100.",
        ),
        (
            {"action": "SELL", "take_profit": D("90"), "stop_loss": D("99")},
            "stop_loss must be above the entry price 100.",
        ),
    ],
)
def test_bracket_messages(fields, expected):
    assert message(gates.gate_bracket_shape, order(**{**BRACKET, **fields}), None) == expected


def test_tick_size_message():
    text = message(gates.gate_tick_size, order(limit_price=D("1.005")), contract(min_tick=D("0.010")))
    assert text == "limit_price 1.005 is not a multiple of the minimum tick 0.01."


def test_managed_account_message():
    assert message(gates.gate_account_managed, "U9", ("DU1",)) == "Account U9 is not managed by the connected gateway."


def test_account_mode_messages(settings):
    assert message(gates.gate_account_mode, "U1") == "TRADING_MODE=paper may not trade a live account (U1)."
    settings.TRADING_MODE = "live"
    assert message(gates.gate_account_mode, "DU1") == "TRADING_MODE=live may not trade a paper account (DU1)."


def test_risk_messages():
    ref = D("100")
    assert (
        message(gates.gate_kill_switch, True) == "Trading is halted (kill switch). An admin user must resume trading."
    )
    assert message(gates.gate_max_quantity, order(quantity=D("101"))) == (
        "quantity 101 exceeds RISK_MAX_ORDER_QUANTITY 100."
    )
    assert message(gates.gate_max_quantity, order(quantity=D("100.5"))) == (
        "quantity 100.5 exceeds RISK_MAX_ORDER_QUANTITY 100."
    )
    assert message(gates.gate_orders_per_minute, 3) == "3 orders in the last minute; the limit is 3."
    assert message(gates.gate_duplicate, True) == (
        "An identical order was placed in the last 5s; send a client_order_id to place it on purpose."
    )
    assert message(gates.gate_fresh_quote, quote(time=NOW - timedelta(seconds=11))) == (
        "No recent quote for this contract, so the price checks cannot run."
    )
    assert message(
        gates.gate_notional, order(quantity=D("99"), order_type="LMT", limit_price=D("102")), contract(), ref
    ) == ("notional 10098.00 exceeds RISK_MAX_ORDER_NOTIONAL 10000.")
    assert message(gates.gate_collar, order(quantity=D("1"), order_type="STP", stop_price=D("90")), ref) == (
        "stop_price 90 is 10.00% from the reference price 100; the collar is 5%."
    )


def test_buying_power_message():
    what_if = preview(init_margin_after=D("2"), equity_with_loan_after=D("1"))
    assert message(gates.gate_buying_power, what_if) == (
        "The order's initial margin would exceed the account's equity with loan."
    )


def test_live_override_message(settings):
    settings.TRADING_MODE = "live"
    settings.LIVE_TRADING_OVERRIDE_FILE = ""
    assert message(gates.gate_live_override) == "Live orders need LIVE_TRADING_OVERRIDE_FILE to exist; it does not."
