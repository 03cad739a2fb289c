"""Risk and arming gates on plain data, each limit at, just below and just above its boundary.

The gates run as the one gate sequence runs them (`orders.services.checks`): the order's own risk steps
of `PLACE_STEPS` in their order, then the shared-state gates in the order the pipeline applies them.
Limits (see the `limits` fixture): quantity 100, notional 10,000, collar 5%, 3 orders a minute,
quotes fresh for 10 s. The clock is frozen, so freshness is exact to the microsecond.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from ibkrgw.errors import ErrorCode
from orders import gates
from orders.gates import GateBlocked
from orders.services import checks
from orders.services.checks import Checks, SharedState
from tests.unit.builders import NOW, contract, order, preview, quote

D = Decimal
pytestmark = pytest.mark.usefixtures("limits", "frozen_clock")
FRESH = quote(last="100")
# The steps of PLACE_STEPS that judge the order's size and price against the market.
RISK_STEPS = [checks.max_quantity, checks.fresh_quote, checks.notional, checks.collar]


def risk(request, *, q=FRESH, c=None) -> Checks:
    """The risk steps in their order; `q` is the quote `fresh_quote` would fetch from the broker."""
    trip = Checks(request=request, account="DU1234567", contract=c or contract())
    for step in RISK_STEPS:
        if step is checks.fresh_quote:
            trip.quote = q
            trip.reference = gates.gate_fresh_quote(q)
        else:
            step(trip)
    return trip


def shared(*, halted=False, orders_last_minute=0, duplicate_recent=False, legs=1) -> None:
    """The shared-state gates as the pipeline applies them: in order, the first block raises."""
    state = SharedState(halted=halted, orders_last_minute=orders_last_minute, duplicate_recent=duplicate_recent)
    for gate in checks.shared_state_gates(state, legs=legs):
        gate()


def passes(request, *, q=FRESH, c=None) -> None:
    risk(request, q=q, c=c)


def blocked(request=None, *, q=FRESH, c=None, **state) -> GateBlocked:
    with pytest.raises(GateBlocked) as excinfo:
        if request is None:
            shared(**state)
        else:
            risk(request, q=q, c=c)
    assert excinfo.value.gate == "risk"
    assert excinfo.value.details["gate"] == "risk"
    return excinfo.value


def test_the_sequence_runs_the_risk_steps_in_this_order():
    assert [step for step in checks.PLACE_STEPS if step in RISK_STEPS] == RISK_STEPS
    assert [step for step in checks.EXISTING_ORDER_STEPS if step in RISK_STEPS] == RISK_STEPS


# -- kill switch --------------------------------------------------------------------------------
def test_the_kill_switch_blocks_with_423():
    with pytest.raises(GateBlocked) as excinfo:
        gates.gate_kill_switch(True)
    assert excinfo.value.code == ErrorCode.TRADING_HALTED
    assert excinfo.value.http_status == 423
    gates.gate_kill_switch(False)


def test_a_halt_blocks_even_a_harmless_order():
    passes(order(quantity=D("1")))
    exc = blocked(halted=True)
    assert exc.code == ErrorCode.TRADING_HALTED
    assert exc.http_status == 423
    shared(halted=False)


# -- max quantity -------------------------------------------------------------------------------
def test_quantity_at_the_limit_passes():
    passes(order(quantity=D("100")), q=quote(last="1"))


def test_quantity_just_below_the_limit_passes():
    passes(order(quantity=D("99.9999")), q=quote(last="1"))


@pytest.mark.parametrize("quantity", ["100.0001", "101"])
def test_quantity_just_above_the_limit_is_refused(quantity):
    exc = blocked(order(quantity=D(quantity)), q=quote(last="1"))
    assert exc.code == ErrorCode.RISK_MAX_QUANTITY
    assert exc.http_status == 422
    assert exc.details["limit"] == "100"
    assert quantity in exc.message


# -- orders per minute --------------------------------------------------------------------------
def test_orders_below_the_per_minute_limit_pass():
    shared(orders_last_minute=2)
    shared(orders_last_minute=0, legs=3)  # a bracket of 3 legs into an empty minute


@pytest.mark.parametrize(("count", "legs"), [(3, 1), (4, 1), (1, 3), (2, 2)])
def test_the_order_that_would_exceed_the_per_minute_limit_is_refused(count, legs):
    exc = blocked(orders_last_minute=count, legs=legs)
    assert exc.code == ErrorCode.RISK_RATE_LIMIT
    assert exc.http_status == 429
    assert exc.details["limit"] == 3
    assert exc.details["retry_after_s"] == 60


# -- duplicates ---------------------------------------------------------------------------------
def test_a_recent_identical_order_is_a_possible_duplicate():
    exc = blocked(duplicate_recent=True)
    assert exc.code == ErrorCode.POSSIBLE_DUPLICATE
    assert exc.http_status == 409
    assert "5s" in exc.message


def test_no_recent_identical_order_passes():
    shared(duplicate_recent=False)


# -- quote freshness ----------------------------------------------------------------------------
def test_a_quote_exactly_at_the_staleness_limit_is_fresh():
    assert gates.quote_is_fresh(quote(time=NOW - timedelta(seconds=10)))
    passes(order(), q=quote(time=NOW - timedelta(seconds=10)))


def test_a_quote_one_microsecond_past_the_limit_is_stale():
    stale = quote(time=NOW - timedelta(seconds=10, microseconds=1))
    assert not gates.quote_is_fresh(stale)
    exc = blocked(order(), q=stale)
    assert exc.code == ErrorCode.RISK_STALE_MARKET_DATA
    assert exc.http_status == 422
    assert exc.details["stale_after_s"] == 10


def test_a_quote_well_within_the_limit_is_fresh():
    assert gates.quote_is_fresh(quote(time=NOW - timedelta(seconds=9)))


def test_the_receive_time_counts_when_the_quote_has_no_exchange_time():
    assert gates.quote_is_fresh(quote(time=None, received_at=NOW - timedelta(seconds=1)))
    assert not gates.quote_is_fresh(quote(time=None, received_at=NOW - timedelta(seconds=11)))


def test_the_exchange_time_wins_over_the_receive_time():
    assert not gates.quote_is_fresh(quote(time=NOW - timedelta(seconds=11), received_at=NOW))


def test_a_quote_without_any_time_is_stale():
    assert not gates.quote_is_fresh(quote(time=None, received_at=None))
    assert blocked(order(), q=quote(time=None)).code == ErrorCode.RISK_STALE_MARKET_DATA


def test_no_quote_at_all_is_stale():
    assert not gates.quote_is_fresh(None)
    assert blocked(order(), q=None).code == ErrorCode.RISK_STALE_MARKET_DATA


def test_a_fresh_quote_without_any_price_cannot_run_the_price_checks():
    exc = blocked(order(), q=quote(last=None, bid=None, ask=None, close=None))
    assert exc.code == ErrorCode.RISK_STALE_MARKET_DATA


# -- reference price ----------------------------------------------------------------------------
def test_the_reference_price_is_the_last_trade_first():
    assert gates.reference_price(quote(last="101", bid="99", ask="100", close="98")) == D("101")


def test_without_a_last_trade_the_reference_is_the_mid():
    assert gates.reference_price(quote(last=None, bid="99", ask="100", close="98")) == D("99.5")


@pytest.mark.parametrize(("bid", "ask"), [("99", None), (None, "100"), (None, None)])
def test_without_both_sides_the_reference_is_the_close(bid, ask):
    assert gates.reference_price(quote(last=None, bid=bid, ask=ask, close="98")) == D("98")


def test_without_a_quote_there_is_no_reference():
    assert gates.reference_price(None) is None


# -- max notional (quantity x price x multiplier) --------------------------------------------------
def test_notional_at_the_limit_passes():
    passes(order(quantity=D("100")), q=quote(last="100"))  # 100 x 100 = 10,000


def test_notional_just_below_the_limit_passes():
    passes(order(quantity=D("99.99")), q=quote(last="100"))


def test_notional_just_above_the_limit_is_refused():
    exc = blocked(order(quantity=D("100"), order_type="LMT", limit_price=D("100.01")), q=quote(last="100"))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL
    assert exc.http_status == 422
    assert exc.details["notional"] == "10001.00"
    assert exc.details["limit"] == "10000"


def test_a_market_order_is_valued_at_the_reference_price():
    passes(order(quantity=D("50")), q=quote(last="200"))
    exc = blocked(order(quantity=D("50")), q=quote(last="200.01"))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL
    assert exc.details["notional"] == "10000.50"


def test_a_limit_order_is_valued_at_its_limit_not_the_quote():
    # 99 x 101.02 = 10,000.98 even though the quote says 99 x 100 = 9,900.
    exc = blocked(order(quantity=D("99"), order_type="LMT", limit_price=D("101.02")), q=quote(last="100"))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL
    assert exc.details["notional"] == "10000.98"


def test_a_stop_order_is_valued_at_its_stop_not_the_quote():
    exc = blocked(order(quantity=D("99"), order_type="STP", stop_price=D("101.02")), q=quote(last="100"))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL
    assert exc.details["notional"] == "10000.98"


def test_a_stop_limit_order_is_valued_at_its_limit():
    request = order(quantity=D("99"), order_type="STP_LMT", stop_price=D("100"), limit_price=D("101.02"))
    assert blocked(request, q=quote(last="100")).code == ErrorCode.RISK_MAX_NOTIONAL


@pytest.mark.parametrize(
    ("sec_type", "multiplier", "quantity", "price"),
    [
        ("FUT", "50", D("2"), "100"),  # 2 x 100 x 50 = 10,000
        ("OPT", "100", D("4"), "25"),  # 4 x 25 x 100 = 10,000
        ("FOP", "50", D("1"), "200"),
        ("STK", "", D("100"), "100"),
        ("CASH", "", D("100"), "100"),
    ],
)
def test_notional_counts_the_contract_multiplier_per_sec_type(sec_type, multiplier, quantity, price):
    c = contract(sec_type=sec_type, multiplier=multiplier)
    passes(order(sec_type=sec_type, quantity=quantity), c=c, q=quote(last=price))
    over = str(D(price) + D("0.01"))
    exc = blocked(order(sec_type=sec_type, quantity=quantity), c=c, q=quote(last=over))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL


def test_a_future_far_under_the_limit_without_its_multiplier_is_refused_with_it():
    # 3 x 100 = 300 looks harmless; with the multiplier of 50 it is 15,000.
    c = contract(sec_type="FUT", multiplier="50")
    exc = blocked(order(sec_type="FUT", quantity=D("3")), c=c, q=quote(last="100"))
    assert exc.code == ErrorCode.RISK_MAX_NOTIONAL
    assert exc.details["notional"] == "15000.00"


# -- price collar (limit and stop) -------------------------------------------------------------------
@pytest.mark.parametrize(("order_type", "name"), [("LMT", "limit_price"), ("STP", "stop_price")])
@pytest.mark.parametrize("price", ["95", "105", "95.01", "104.99", "100"])
def test_prices_within_the_collar_pass(order_type, name, price):
    passes(order(order_type=order_type, **{name: D(price)}), q=quote(last="100"))


@pytest.mark.parametrize(("order_type", "name"), [("LMT", "limit_price"), ("STP", "stop_price")])
@pytest.mark.parametrize(("price", "deviation"), [("94.99", "5.01"), ("105.01", "5.01"), ("50", "50.00")])
def test_prices_outside_the_collar_are_refused(order_type, name, price, deviation):
    exc = blocked(order(quantity=D("1"), order_type=order_type, **{name: D(price)}), q=quote(last="100"))
    assert exc.code == ErrorCode.RISK_PRICE_COLLAR
    assert exc.http_status == 422
    assert exc.details == {"gate": "risk", "field": name, "reference_price": "100", "deviation_pct": deviation}
    assert name in exc.message


def test_the_collar_is_a_percentage_of_the_reference_price():
    # 5% of 20 is 1: 21 passes, 21.01 does not.
    passes(order(order_type="LMT", limit_price=D("21")), q=quote(last="20"))
    assert blocked(order(order_type="LMT", limit_price=D("21.01")), q=quote(last="20")).code == (
        ErrorCode.RISK_PRICE_COLLAR
    )


def test_a_stop_limit_order_collars_its_stop_as_well_as_its_limit():
    request = order(quantity=D("1"), order_type="STP_LMT", limit_price=D("100"), stop_price=D("90"))
    exc = blocked(request, q=quote(last="100"))
    assert exc.code == ErrorCode.RISK_PRICE_COLLAR
    assert exc.details["field"] == "stop_price"
    request = order(quantity=D("1"), order_type="STP_LMT", limit_price=D("90"), stop_price=D("100"))
    assert blocked(request, q=quote(last="100")).details["field"] == "limit_price"


def test_a_market_order_has_no_price_to_collar():
    passes(order(quantity=D("1")), q=quote(last="100"))


# -- order of the checks ------------------------------------------------------------------------
def test_the_order_s_own_risk_steps_refuse_in_sequence_order():
    everything_wrong = order(quantity=D("1000"), order_type="LMT", limit_price=D("1"))
    assert blocked(everything_wrong, q=None).code == ErrorCode.RISK_MAX_QUANTITY
    over_and_far = order(quantity=D("100"), order_type="LMT", limit_price=D("200"))
    assert blocked(over_and_far, q=None).code == ErrorCode.RISK_STALE_MARKET_DATA
    assert blocked(over_and_far).code == ErrorCode.RISK_MAX_NOTIONAL
    assert blocked(order(quantity=D("1"), order_type="LMT", limit_price=D("200"))).code == ErrorCode.RISK_PRICE_COLLAR


def test_the_shared_state_gates_refuse_in_pipeline_order():
    assert blocked(halted=True, orders_last_minute=9, duplicate_recent=True).code == ErrorCode.TRADING_HALTED
    assert blocked(orders_last_minute=9, duplicate_recent=True).code == ErrorCode.RISK_RATE_LIMIT
    assert blocked(duplicate_recent=True).code == ErrorCode.POSSIBLE_DUPLICATE


def test_the_checks_keep_what_they_saw():
    trip = risk(order(quantity=D("2")), q=quote(last="101"))
    assert (trip.quote, trip.reference, trip.blocks) == (quote(last="101"), D("101"), [])


# -- buying power -------------------------------------------------------------------------------
def test_margin_up_to_the_equity_with_loan_passes():
    gates.gate_buying_power(preview(init_margin_after=D("5000"), equity_with_loan_after=D("5000")))
    gates.gate_buying_power(preview(init_margin_after=D("4999.99"), equity_with_loan_after=D("5000")))


def test_margin_above_the_equity_with_loan_is_refused():
    with pytest.raises(GateBlocked) as excinfo:
        gates.gate_buying_power(preview(init_margin_after=D("5000.01"), equity_with_loan_after=D("5000")))
    exc = excinfo.value
    assert exc.code == ErrorCode.RISK_BUYING_POWER
    assert exc.http_status == 422
    assert exc.details == {"gate": "risk", "init_margin_after": "5000.01", "equity_with_loan_after": "5000"}


@pytest.mark.parametrize(
    "what_if",
    [
        None,
        preview(init_margin_after=None, equity_with_loan_after=D("1")),
        preview(init_margin_after=D("9"), equity_with_loan_after=None),
    ],
    ids=["no preview", "no margin figure", "no equity figure"],
)
def test_without_the_margin_figures_there_is_nothing_to_compare(what_if):
    gates.gate_buying_power(what_if)


# -- arming -------------------------------------------------------------------------------------
def test_orders_are_armed_only_when_enabled(settings):
    settings.ORDERS_ENABLED = False
    assert gates.orders_armed() is False
    settings.ORDERS_ENABLED = True
    assert gates.orders_armed() is True


def test_paper_mode_needs_no_override_file(settings, tmp_path):
    settings.TRADING_MODE = "paper"
    settings.LIVE_TRADING_OVERRIDE_FILE = str(tmp_path / "absent")
    gates.gate_live_override()


def test_live_orders_need_the_override_file_now(settings, tmp_path):
    settings.TRADING_MODE = "live"
    path = tmp_path / "override"
    settings.LIVE_TRADING_OVERRIDE_FILE = str(path)
    with pytest.raises(GateBlocked) as excinfo:
        gates.gate_live_override()
    assert excinfo.value.code == ErrorCode.LIVE_OVERRIDE_MISSING
    assert excinfo.value.http_status == 403
    assert excinfo.value.details == {"gate": "arming", "path": str(path)}
    path.write_text("yes")
    gates.gate_live_override()


def test_live_orders_without_an_override_path_are_refused(settings):
    settings.TRADING_MODE = "live"
    settings.LIVE_TRADING_OVERRIDE_FILE = ""
    with pytest.raises(GateBlocked) as excinfo:
        gates.gate_live_override()
    assert excinfo.value.details == {"gate": "arming", "path": None}


def test_the_recent_window_reaches_back_the_given_seconds():
    assert gates.recent_window(60) == NOW - timedelta(seconds=60)
