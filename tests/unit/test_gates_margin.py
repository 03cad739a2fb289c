"""Buying power estimated from the account's streamed funds and positions, bracket legs in the notional,
collar and rate limits, and the contract multiplier: each at its boundary, on plain data."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokers.adapter import AccountRisk
from ibkrgw.errors import ErrorCode
from orders import gates
from orders.gates import GateBlocked
from tests.unit.builders import contract, order

D = Decimal
pytestmark = pytest.mark.usefixtures("limits")


def refused(check, *args) -> GateBlocked:
    with pytest.raises(GateBlocked) as excinfo:
        check(*args)
    assert excinfo.value.gate == "risk"
    return excinfo.value


# -- contract multiplier ------------------------------------------------------------------------
@pytest.mark.parametrize(("multiplier", "expected"), [("", "1"), ("50", "50"), ("0.1", "0.1"), ("abc", "1")])
def test_the_multiplier_is_the_contracts_or_one(multiplier, expected):
    assert gates.contract_multiplier(contract(multiplier=multiplier)) == D(expected)


# -- orders per minute, counting every order a request adds -------------------------------------------
def test_orders_that_fit_under_the_per_minute_limit_pass():
    gates.gate_orders_per_minute(2)  # the third of 3
    gates.gate_orders_per_minute(0, adding=3)  # a bracket of 3 legs into an empty minute


@pytest.mark.parametrize(("already", "adding"), [(3, 1), (1, 3), (2, 2)])
def test_orders_that_would_go_over_the_per_minute_limit_are_refused(already, adding):
    exc = refused(gates.gate_orders_per_minute, already, adding)
    assert exc.code == ErrorCode.RISK_RATE_LIMIT
    assert exc.http_status == 429
    assert exc.details == {"gate": "risk", "limit": 3, "retry_after_s": 60}


def test_duplicates_are_refused_only_when_flagged():
    gates.gate_duplicate(False)
    assert refused(gates.gate_duplicate, True).code == ErrorCode.POSSIBLE_DUPLICATE


def test_max_quantity_alone():
    gates.gate_max_quantity(order(quantity=D("100")))
    assert refused(gates.gate_max_quantity, order(quantity=D("100.01"))).code == ErrorCode.RISK_MAX_QUANTITY


# -- notional of a bracket: its worst leg -------------------------------------------------------------
def test_a_plain_order_is_valued_at_its_own_price():
    assert gates.order_notional(order(quantity=D("2")), contract(), D("100")) == D("200")
    assert gates.order_notional(
        order(quantity=D("2"), order_type="LMT", limit_price=D("90")), contract(), D("100")
    ) == (D("180"))


def test_a_bracket_is_valued_at_the_highest_price_it_names():
    request = order(quantity=D("2"), order_type="LMT", limit_price=D("100"), take_profit=D("110"), stop_loss=D("95"))
    assert gates.order_notional(request, contract(multiplier="10"), D("100")) == D("2200")
    sell = order(
        action="SELL", quantity=D("2"), order_type="LMT", limit_price=D("100"), take_profit=D("90"), stop_loss=D("104")
    )
    assert gates.order_notional(sell, contract(), D("100")) == D("208")


def test_a_bracket_whose_take_profit_goes_over_the_notional_limit_is_refused():
    # 95 x 105 = 9,975 at the entry; 95 x 106 = 10,070 at the take-profit.
    request = order(quantity=D("95"), order_type="LMT", limit_price=D("105"), take_profit=D("106"))
    exc = refused(gates.gate_notional, request, contract(), D("105"))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL
    assert exc.details["notional"] == "10070.00"
    gates.gate_notional(order(quantity=D("95"), order_type="LMT", limit_price=D("105")), contract(), D("105"))


# -- collar on every price an order names ---------------------------------------------------------
@pytest.mark.parametrize("name", ["limit_price", "stop_price", "take_profit", "stop_loss"])
def test_every_named_price_is_collared(name):
    gates.gate_collar(order(**{name: D("105")}), D("100"))
    gates.gate_collar(order(**{name: D("95")}), D("100"))
    exc = refused(gates.gate_collar, order(**{name: D("105.01")}), D("100"))
    assert exc.code == ErrorCode.RISK_PRICE_COLLAR
    assert exc.details["field"] == name


def test_fresh_quote_gate_returns_the_reference_price(frozen_clock):
    from tests.unit.builders import quote

    assert gates.gate_fresh_quote(quote(last="101")) == D("101")
    assert refused(gates.gate_fresh_quote, None).code == ErrorCode.RISK_STALE_MARKET_DATA


# -- margin estimate ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sec_type", "rate"),
    [
        ("STK", "0.5"),
        ("FUT", "0.1"),
        ("FOP", "1"),
        ("OPT", "1"),
        ("CASH", "0.05"),
        ("BOND", "0.1"),
        ("CFD", "0.2"),
        ("WAR", "1"),
    ],
)
def test_initial_margin_is_a_share_of_notional_per_sec_type(sec_type, rate):
    request = order(sec_type=sec_type, quantity=D("10"))
    assert gates.margin_estimate(request, contract(sec_type=sec_type), D("100"), D(0)) == D(1000) * D(rate)


def test_the_margin_estimate_counts_the_multiplier_and_the_order_price():
    request = order(sec_type="FUT", quantity=D("2"), order_type="LMT", limit_price=D("90"))
    assert gates.margin_estimate(request, contract(sec_type="FUT", multiplier="50"), D("100"), D(0)) == D("900")
    stop = order(quantity=D("2"), order_type="STP", stop_price=D("80"))
    assert gates.margin_estimate(stop, contract(), D("100"), D(0)) == D("80")


@pytest.mark.parametrize(
    ("action", "position", "growth"),
    [
        ("BUY", "0", "10"),
        ("BUY", "5", "10"),  # long 5 -> long 15
        ("BUY", "-10", "0"),  # short 10 -> flat: closing costs nothing
        ("BUY", "-4", "2"),  # short 4 -> long 6: the short's margin is freed, the net growth is 2
        ("BUY_TO_COVER", "-10", "0"),
        ("SELL", "10", "0"),
        ("SELL", "0", "10"),  # opening a short
        ("SELL_SHORT", "3", "4"),  # long 3 -> short 7
    ],
)
def test_only_the_growth_of_the_position_needs_margin(action, position, growth):
    request = order(action=action, quantity=D("10"))
    expected = D(growth) * D("100") * D("0.5")
    assert gates.margin_estimate(request, contract(), D("100"), D(position)) == expected


def risk(funds, *, currency="USD", positions=()):
    return AccountRisk(
        account="DU1",
        available_funds=None if funds is None else D(funds),
        currency=currency,
        positions=positions,
    )


def test_an_order_within_the_available_funds_passes():
    request = order(quantity=D("10"))  # 10 x 100 x 0.5 = 500
    gates.gate_buying_power_estimate(request, contract(), D("100"), risk("500"))
    gates.gate_buying_power_estimate(request, contract(), D("100"), risk("500.01"))


def test_an_order_over_the_available_funds_is_refused():
    request = order(quantity=D("10"))
    exc = refused(gates.gate_buying_power_estimate, request, contract(), D("100"), risk("499.99"))
    assert exc.code == ErrorCode.RISK_BUYING_POWER
    assert exc.http_status == 422
    assert exc.details == {"gate": "risk", "margin_estimate": "500.00", "available_funds": "499.99"}
    assert exc.message == "The order needs about 500.00 USD of initial margin; the account has 499.99 available."


def test_closing_a_position_passes_with_no_funds_left():
    request = order(action="SELL", quantity=D("10"))
    gates.gate_buying_power_estimate(request, contract(), D("100"), risk("0", positions=((265598, D("10")),)))
    held_elsewhere = risk("0", positions=((1, D("10")),))  # another contract's position does not help
    assert refused(gates.gate_buying_power_estimate, request, contract(), D("100"), held_elsewhere).code == (
        ErrorCode.RISK_BUYING_POWER
    )


@pytest.mark.parametrize(
    "account_risk",
    [None, risk(None), risk("0", currency="EUR")],
    ids=["no account figures", "no available funds", "another currency"],
)
def test_without_comparable_figures_the_estimate_is_skipped(account_risk):
    gates.gate_buying_power_estimate(order(quantity=D("10")), contract(currency="USD"), D("100"), account_risk)


def test_an_account_without_a_currency_is_compared_as_is():
    assert refused(
        gates.gate_buying_power_estimate, order(quantity=D("10")), contract(), D("100"), risk("1", currency="")
    ).code == (ErrorCode.RISK_BUYING_POWER)
    refused(gates.gate_buying_power_estimate, order(quantity=D("10")), contract(currency=""), D("100"), risk("1"))


def test_position_lookup_defaults_to_flat():
    assert risk("1", positions=((1, D("5")), (2, D("-3")))).position(2) == D("-3")
    assert risk("1").position(2) == D(0)
