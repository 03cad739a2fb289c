"""Validation gates on plain data: order shape, every order type x TIF, brackets, tick size, accounts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ibkrgw.errors import ErrorCode
from orders import gates
from orders.gates import GateBlocked
from orders.types import ORDER_TYPES, TIFS
from tests.unit.builders import contract, order

D = Decimal

# The smallest valid request of each order type (prices it needs, none it may not take).
VALID = {
    "MKT": {},
    "LMT": {"limit_price": D("100")},
    "STP": {"stop_price": D("95")},
    "STP_LMT": {"limit_price": D("94"), "stop_price": D("95")},
    "MOC": {},
    "LOC": {"limit_price": D("100")},
    "TRAIL": {"trail_amount": D("1")},
    "TRAIL_LIMIT": {"limit_price": D("100"), "trail_percent": D("2")},
}


def refused(check, *args) -> GateBlocked:
    with pytest.raises(GateBlocked) as excinfo:
        check(*args)
    return excinfo.value


def shape_refusal(**fields) -> GateBlocked:
    exc = refused(gates.gate_order_shape, order(**fields))
    assert exc.code == ErrorCode.INVALID_ORDER
    assert exc.http_status == 422
    assert exc.gate == "validation"
    assert exc.details["gate"] == "validation"
    return exc


def typed(order_type: str, **fields):
    return {"order_type": order_type, **VALID[order_type], **fields}


# -- quantity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantity", ["0", "-1", "-0.0001"])
def test_a_quantity_of_zero_or_less_is_refused(quantity):
    assert shape_refusal(quantity=D(quantity)).details["field"] == "quantity"


def test_the_smallest_positive_quantity_passes():
    gates.gate_order_shape(order(quantity=D("0.0001")))


@pytest.mark.parametrize("sec_type", ["FUT", "OPT", "FOP", "BOND"])
def test_contracts_traded_in_whole_units_refuse_fractions(sec_type):
    extra = {"con_id": 1} if sec_type in ("OPT", "FOP") else {}
    assert shape_refusal(sec_type=sec_type, quantity=D("1.5"), **extra).details["field"] == "quantity"
    gates.gate_order_shape(order(sec_type=sec_type, quantity=D("2.000"), **extra))


def test_shares_may_be_fractional():
    gates.gate_order_shape(order(sec_type="STK", quantity=D("1.5")))


# -- prices each order type needs and refuses ------------------------------------------------------
@pytest.mark.parametrize("order_type", ORDER_TYPES)
def test_every_order_type_has_a_valid_shape(order_type):
    gates.gate_order_shape(order(**typed(order_type)))


@pytest.mark.parametrize("order_type", ["LMT", "STP_LMT", "LOC", "TRAIL_LIMIT"])
def test_order_types_with_a_limit_need_limit_price(order_type):
    fields = typed(order_type)
    del fields["limit_price"]
    exc = shape_refusal(**fields)
    assert exc.details["field"] == "limit_price"
    assert order_type in exc.message


@pytest.mark.parametrize("order_type", ["MKT", "STP", "MOC", "TRAIL"])
def test_order_types_without_a_limit_refuse_limit_price(order_type):
    assert shape_refusal(**typed(order_type, limit_price=D("100"))).details["field"] == "limit_price"


@pytest.mark.parametrize("order_type", ["STP", "STP_LMT"])
def test_stop_orders_need_stop_price(order_type):
    fields = typed(order_type)
    del fields["stop_price"]
    assert shape_refusal(**fields).details["field"] == "stop_price"


@pytest.mark.parametrize("order_type", ["MKT", "LMT", "MOC", "LOC"])
def test_order_types_without_a_stop_refuse_stop_price(order_type):
    assert shape_refusal(**typed(order_type, stop_price=D("95"))).details["field"] == "stop_price"


@pytest.mark.parametrize("order_type", ["TRAIL", "TRAIL_LIMIT"])
def test_trailing_orders_may_carry_an_initial_stop_price(order_type):
    gates.gate_order_shape(order(**typed(order_type, stop_price=D("95"))))


@pytest.mark.parametrize("order_type", ["TRAIL", "TRAIL_LIMIT"])
def test_trailing_orders_need_exactly_one_trail(order_type):
    neither = {k: v for k, v in typed(order_type).items() if not k.startswith("trail_")}
    assert shape_refusal(**neither).details["field"] == "trail_amount"
    both = {**neither, "trail_amount": D("1"), "trail_percent": D("2")}
    assert shape_refusal(**both).details["field"] == "trail_amount"
    gates.gate_order_shape(order(**neither, trail_amount=D("1")))
    gates.gate_order_shape(order(**neither, trail_percent=D("2")))


@pytest.mark.parametrize("trail", ["trail_amount", "trail_percent"])
@pytest.mark.parametrize("order_type", ["MKT", "LMT", "STP", "STP_LMT", "MOC", "LOC"])
def test_orders_that_do_not_trail_refuse_a_trail(order_type, trail):
    assert shape_refusal(**typed(order_type, **{trail: D("1")})).details["field"] == "trail_amount"


@pytest.mark.parametrize(
    ("order_type", "name"),
    [("LMT", "limit_price"), ("STP", "stop_price"), ("TRAIL", "trail_amount"), ("TRAIL_LIMIT", "trail_percent")],
)
@pytest.mark.parametrize("value", ["0", "-0.01"])
def test_prices_and_trails_must_be_positive(order_type, name, value):
    exc = shape_refusal(**typed(order_type, **{name: D(value)}))
    assert exc.details["field"] == name
    assert name in exc.message


@pytest.mark.parametrize(
    ("order_type", "name"),
    [("LMT", "limit_price"), ("STP", "stop_price"), ("TRAIL", "trail_amount"), ("TRAIL_LIMIT", "trail_percent")],
)
def test_the_smallest_positive_price_or_trail_passes(order_type, name):
    gates.gate_order_shape(order(**typed(order_type, **{name: D("0.0001")})))


def test_trail_percent_must_stay_below_one_hundred():
    assert shape_refusal(**typed("TRAIL_LIMIT", trail_percent=D("100"))).details["field"] == "trail_percent"
    assert shape_refusal(**typed("TRAIL_LIMIT", trail_percent=D("100.01"))).details["field"] == "trail_percent"
    gates.gate_order_shape(order(**typed("TRAIL_LIMIT", trail_percent=D("99.99"))))


# -- order type x time in force -----------------------------------------------------------------
def _tif_allowed(order_type: str, tif: str) -> bool:
    if order_type in ("MOC", "LOC"):
        return tif == "DAY"  # on-close orders live for the day they close
    if tif == "OPG":
        return order_type in ("MKT", "LMT")  # market/limit on open only
    return True


@pytest.mark.parametrize("tif", TIFS)
@pytest.mark.parametrize("order_type", ORDER_TYPES)
def test_every_order_type_and_time_in_force(order_type, tif):
    request = order(**typed(order_type, tif=tif))
    if _tif_allowed(order_type, tif):
        gates.gate_order_shape(request)
    else:
        exc = shape_refusal(**typed(order_type, tif=tif))
        assert exc.details["field"] == "tif"


# -- options ------------------------------------------------------------------------------------
OPTION = {"expiry": "20260320", "strike": D("200"), "right": "C"}


@pytest.mark.parametrize("sec_type", ["OPT", "FOP"])
@pytest.mark.parametrize("missing", ["expiry", "strike", "right"])
def test_options_need_expiry_strike_and_right(sec_type, missing):
    fields = {**OPTION, missing: None if missing == "strike" else ""}
    assert shape_refusal(sec_type=sec_type, quantity=D("1"), **fields).details["field"] == "expiry"


@pytest.mark.parametrize("sec_type", ["OPT", "FOP"])
def test_an_option_is_named_by_its_terms_or_its_con_id(sec_type):
    gates.gate_order_shape(order(sec_type=sec_type, quantity=D("1"), **OPTION))
    gates.gate_order_shape(order(sec_type=sec_type, quantity=D("1"), con_id=123))


def test_shares_need_no_option_terms():
    gates.gate_order_shape(order(sec_type="STK"))


# -- brackets -----------------------------------------------------------------------------------
def bracket(**fields):
    values = {"order_type": "LMT", "limit_price": D("100"), "take_profit": D("110"), "stop_loss": D("90")}
    values.update(fields)
    return order(**values)


def bracket_refusal(request, reference=None) -> GateBlocked:
    exc = refused(gates.gate_bracket_shape, request, reference)
    assert exc.code == ErrorCode.INVALID_ORDER
    assert exc.http_status == 422
    return exc


def test_a_plain_order_is_not_checked_as_a_bracket():
    gates.gate_bracket_shape(order(order_type="STP", stop_price=D("95"), tif="IOC"), None)


@pytest.mark.parametrize("order_type", ["MKT", "LMT"])
@pytest.mark.parametrize("tif", ["DAY", "GTC"])
def test_a_bracket_entry_is_mkt_or_lmt_for_the_day_or_until_cancelled(order_type, tif):
    limit = D("100") if order_type == "LMT" else None
    gates.gate_bracket_shape(bracket(order_type=order_type, limit_price=limit, tif=tif), D("100"))


@pytest.mark.parametrize(
    "fields",
    [
        {"order_type": "STP", "limit_price": None, "stop_price": D("95")},
        {"order_type": "STP_LMT", "stop_price": D("95")},
        {"order_type": "TRAIL", "limit_price": None, "trail_amount": D("1")},
        {"tif": "IOC"},
        {"tif": "FOK"},
        {"tif": "OPG"},
    ],
    ids=["STP", "STP_LMT", "TRAIL", "IOC", "FOK", "OPG"],
)
def test_other_bracket_entries_are_refused(fields):
    assert bracket_refusal(bracket(**fields)).details["field"] == "order_type"


def test_a_bracket_leaves_room_for_its_childrens_suffix_in_the_client_order_id():
    gates.gate_bracket_shape(bracket(client_order_id="x" * 61), None)
    assert bracket_refusal(bracket(client_order_id="x" * 62)).details["field"] == "client_order_id"


@pytest.mark.parametrize("name", ["take_profit", "stop_loss"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_bracket_exit_prices_must_be_positive(name, value):
    assert bracket_refusal(bracket(**{name: D(value)})).details["field"] == name


@pytest.mark.parametrize("action", ["BUY", "BUY_TO_COVER"])
def test_a_buy_takes_profit_above_and_stops_out_below_the_entry(action):
    gates.gate_bracket_shape(bracket(action=action, take_profit=D("100.01"), stop_loss=D("99.99")), None)
    for take_profit in ("100", "99"):
        exc = bracket_refusal(bracket(action=action, take_profit=D(take_profit)))
        assert exc.details["field"] == "take_profit"
        assert "above" in exc.message
    for stop_loss in ("100", "101"):
        exc = bracket_refusal(bracket(action=action, stop_loss=D(stop_loss)))
        assert exc.details["field"] == "stop_loss"
        assert "below" in exc.message


@pytest.mark.parametrize("action", ["SELL", "SELL_SHORT"])
def test_a_sell_takes_profit_below_and_stops_out_above_the_entry(action):
    gates.gate_bracket_shape(bracket(action=action, take_profit=D("99.99"), stop_loss=D("100.01")), None)
    for take_profit in ("100", "101"):
        exc = bracket_refusal(bracket(action=action, take_profit=D(take_profit), stop_loss=D("110")))
        assert exc.details["field"] == "take_profit"
        assert "below" in exc.message
    for stop_loss in ("100", "99"):
        exc = bracket_refusal(bracket(action=action, take_profit=D("90"), stop_loss=D(stop_loss)))
        assert exc.details["field"] == "stop_loss"
        assert "above" in exc.message


def test_a_market_bracket_is_checked_against_the_reference_price():
    request = bracket(order_type="MKT", limit_price=None, take_profit=D("110"), stop_loss=D("90"))
    gates.gate_bracket_shape(request, D("100"))
    assert bracket_refusal(request, D("111")).details["field"] == "take_profit"
    assert bracket_refusal(request, D("89")).details["field"] == "stop_loss"


def test_a_limit_bracket_is_checked_against_its_limit_not_the_quote():
    request = bracket(limit_price=D("100"), take_profit=D("105"), stop_loss=D("95"))
    gates.gate_bracket_shape(request, D("200"))
    assert bracket_refusal(bracket(limit_price=D("100"), take_profit=D("99")), D("50")).details["field"] == (
        "take_profit"
    )


def test_a_market_bracket_without_any_price_to_compare_passes_the_shape_check():
    gates.gate_bracket_shape(bracket(order_type="MKT", limit_price=None, take_profit=D("1"), stop_loss=D("999")), None)


def test_one_exit_alone_is_a_bracket_too():
    assert bracket_refusal(bracket(stop_loss=None, take_profit=D("90"))).details["field"] == "take_profit"
    assert bracket_refusal(bracket(take_profit=None, stop_loss=D("110"))).details["field"] == "stop_loss"


# -- tick size ----------------------------------------------------------------------------------
TICKED = ("limit_price", "stop_price", "trail_amount", "take_profit", "stop_loss")


@pytest.mark.parametrize("name", TICKED)
def test_every_price_must_be_a_multiple_of_the_minimum_tick(name):
    exc = refused(gates.gate_tick_size, order(**{name: D("100.005")}), contract(min_tick=D("0.0100")))
    assert exc.code == ErrorCode.INVALID_TICK_SIZE
    assert exc.http_status == 422
    assert exc.details == {"gate": "validation", "field": name, "min_tick": "0.01"}
    assert name in exc.message
    gates.gate_tick_size(order(**{name: D("100.01")}), contract(min_tick=D("0.01")))


@pytest.mark.parametrize("min_tick", [None, D("0")])
def test_without_a_known_tick_any_price_passes(min_tick):
    gates.gate_tick_size(order(limit_price=D("100.00001")), contract(min_tick=min_tick))


def test_unset_prices_are_not_tick_checked():
    gates.gate_tick_size(order(), contract(min_tick=D("0.01")))


# -- managed accounts ---------------------------------------------------------------------------
def test_only_accounts_the_gateway_manages_may_be_used():
    gates.gate_account_managed("DU1", ("DU1", "DU2"))
    exc = refused(gates.gate_account_managed, "DU3", ("DU1", "DU2"))
    assert exc.code == ErrorCode.ACCOUNT_NOT_MANAGED
    assert exc.http_status == 422
    assert exc.details == {"gate": "validation", "account": "DU3", "managed": ["DU1", "DU2"]}


# -- account mode: both directions ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "account", "allowed"),
    [
        ("paper", "DU1234567", True),
        ("paper", "DF1234567", True),
        ("paper", "du1234567", True),
        ("paper", "U1234567", False),
        ("paper", "F1234567", False),
        ("live", "U1234567", True),
        ("live", "DU1234567", False),
        ("live", "DF1234567", False),
        ("live", "df1234567", False),
    ],
)
def test_paper_mode_trades_only_paper_accounts_and_live_mode_only_live_ones(settings, mode, account, allowed):
    settings.TRADING_MODE = mode
    if allowed:
        gates.gate_account_mode(account)
        return
    exc = refused(gates.gate_account_mode, account)
    assert exc.code == ErrorCode.ACCOUNT_MODE_MISMATCH
    assert exc.http_status == 403
    assert exc.details == {"gate": "account_mode", "account": account, "trading_mode": mode}
    assert f"TRADING_MODE={mode}" in exc.message
    assert ("a live" if mode == "paper" else "a paper") in exc.message
