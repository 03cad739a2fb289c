"""The one gate sequence (`orders.services.checks`) without a broker: the steps that need none, the
shared state the pipeline reads from the ledger, and how a preview collects every block.

Limits (the `limits` fixture): 3 orders a minute, a duplicate window of 5 s. The clock stands still at
NOW, a Monday at 15:00 UTC, while NYSE is open (14:30-21:00 UTC).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from orders.gates import GateBlocked
from orders.pipeline import AdmissionGroup
from orders.services import checks
from orders.services.checks import Checks, SharedState
from tests.factories import OrderFactory, TradingSwitchEventFactory
from tests.unit.builders import NOW, contract, order, quote

D = Decimal
ACCOUNT = "DU1234567"
OTHER_ACCOUNT = "DU7654321"
# The terms of an OrderFactory order (AAPL, BUY 10 LMT 189.50 DAY), as the duplicate window compares them.
SAME = {
    "con_id": 265598,
    "action": "BUY",
    "quantity": Decimal("10"),
    "order_type": "LMT",
    "limit_price": Decimal("189.50"),
    "stop_price": None,
    "trail_amount": None,
    "trail_percent": None,
    "tif": "DAY",
    "outside_rth": False,
}
pytestmark = pytest.mark.usefixtures("limits", "frozen_clock")


def trip(request=None, **fields) -> Checks:
    return Checks(request=request or order(), account=ACCOUNT, **fields)


def refused(step, c: Checks) -> GatewayError:
    with pytest.raises(GatewayError) as excinfo:
        step(c)
    return excinfo.value


# -- steps on the order and its contract ------------------------------------------------------------
def test_the_trading_hours_step_judges_the_order_at_this_moment(settings, frozen_clock):
    settings.TRADING_HOURS = "exchange"
    nyse = contract(primary_exchange="NASDAQ")
    checks.trading_hours(trip(contract=nyse))  # 15:00 UTC: the market is open
    frozen_clock.move_to(NOW.replace(hour=21))
    exc = refused(checks.trading_hours, trip(contract=nyse))
    assert (exc.code, exc.details["gate"], exc.details["calendar"]) == (ErrorCode.MARKET_CLOSED, "validation", "XNYS")


def test_a_step_that_needs_the_contract_waits_for_it_in_a_preview():
    no_contract = trip(order(order_type="LMT", limit_price=D("1.005")))
    steps = [checks.tick_size, checks.trading_hours, checks.notional, checks.collar, checks.buying_power]
    assert no_contract.collect(steps) == []
    with_contract = trip(order(order_type="LMT", limit_price=D("1.005")), contract=contract(min_tick=D("0.01")))
    assert [exc.code for exc in with_contract.collect(steps)] == [ErrorCode.INVALID_TICK_SIZE]


def test_the_price_steps_wait_for_a_reference_price_in_a_preview():
    far = order(order_type="LMT", limit_price=D("1000"))
    assert trip(far, contract=contract()).collect([checks.notional, checks.collar]) == []
    blocks = trip(far, contract=contract(), reference=D("100")).collect([checks.notional, checks.collar])
    assert [exc.code for exc in blocks] == [ErrorCode.RISK_PRICE_COLLAR]


@pytest.mark.django_db
def test_a_preview_stops_at_a_contract_it_cannot_resolve():
    # Without a broker the contract cannot be looked up: nothing after it can be judged.
    blocks = trip(order(quantity=D("1000"))).collect([checks.shape, checks.contract, checks.max_quantity])
    assert [exc.code for exc in blocks] == [ErrorCode.BROKER_UNAVAILABLE]
    blocks = trip(order(quantity=D("1000"))).collect([checks.shape, checks.max_quantity, checks.account_mode])
    assert [exc.code for exc in blocks] == [ErrorCode.RISK_MAX_QUANTITY]


def test_placing_stops_at_the_first_block():
    with pytest.raises(GateBlocked) as excinfo:
        trip(order(quantity=D("1000")), contract=contract()).run([checks.shape, checks.max_quantity, checks.notional])
    assert excinfo.value.code == ErrorCode.RISK_MAX_QUANTITY


@pytest.mark.parametrize(
    ("action", "take_profit", "stop_loss", "between", "past_the_stop"),
    [("BUY", "99", "90", "95", "89"), ("SELL", "101", "110", "105", "111")],
)
def test_a_market_bracket_s_exits_are_judged_against_the_quote(action, take_profit, stop_loss, between, past_the_stop):
    request = order(action=action, take_profit=D(take_profit), stop_loss=D(stop_loss))
    checks.bracket_sides(trip(request))  # no quote: nothing to compare with
    checks.bracket_sides(trip(request, quote=quote(last=between)))
    exc = refused(checks.bracket_sides, trip(request, quote=quote(last="100")))
    assert (exc.code, exc.details["field"]) == (ErrorCode.INVALID_ORDER, "take_profit")
    assert exc.message.endswith("the entry price 100.")
    exc = refused(checks.bracket_sides, trip(request, quote=quote(last=past_the_stop)))
    assert exc.details["field"] == "stop_loss"


def test_the_account_mode_step_uses_the_order_s_account(settings):
    checks.account_mode(trip())
    exc = refused(checks.account_mode, Checks(request=order(), account="U1234567"))
    assert exc.code == ErrorCode.ACCOUNT_MODE_MISMATCH


# -- arming -----------------------------------------------------------------------------------------
def test_armed_orders_need_a_connected_and_reconciled_broker(settings):
    settings.ORDERS_ENABLED = False
    checks.broker_ready(trip())  # recorded as simulated: no broker needed
    settings.ORDERS_ENABLED = True
    exc = refused(checks.broker_ready, trip())
    assert isinstance(exc, BrokerUnavailable)
    assert (exc.code, exc.http_status, exc.details) == (ErrorCode.BROKER_UNAVAILABLE, 503, {"gate": "arming"})
    assert exc.message == "The broker is not connected and reconciled yet; no order was sent."


def test_the_live_override_is_needed_only_for_armed_orders(settings):
    settings.TRADING_MODE = "live"
    settings.LIVE_TRADING_OVERRIDE_FILE = ""
    settings.ORDERS_ENABLED = False
    checks.live_override(trip())
    settings.ORDERS_ENABLED = True
    assert refused(checks.live_override, trip()).code == ErrorCode.LIVE_OVERRIDE_MISSING


def test_a_recorded_order_is_sent_only_while_trading_runs_and_orders_are_armed(settings):
    settings.ORDERS_ENABLED = True
    checks.existing_order_gates(halted=False)
    with pytest.raises(GateBlocked) as excinfo:
        checks.existing_order_gates(halted=True)
    assert excinfo.value.code == ErrorCode.TRADING_HALTED
    settings.ORDERS_ENABLED = False
    with pytest.raises(GateBlocked) as excinfo:
        checks.existing_order_gates(halted=False)
    exc = excinfo.value
    assert (exc.code, exc.http_status, exc.gate) == (ErrorCode.INVALID_ORDER, 409, "arming")
    assert exc.message == "Orders are disabled (ORDERS_ENABLED=false)."


# -- shared state from the ledger -------------------------------------------------------------------
def placed(frozen_clock, ago: timedelta, **fields):
    """An order recorded `ago` before NOW; the clock is back at NOW afterwards."""
    frozen_clock.move_to(NOW - ago)
    row = OrderFactory(**fields)
    frozen_clock.move_to(NOW)
    return row


def state(*, supplied_key=False, group=None, account=ACCOUNT) -> SharedState:
    return checks.shared_state(account=account, terms=SAME, supplied_key=supplied_key, group=group)


@pytest.mark.django_db
def test_an_empty_ledger_blocks_nothing():
    assert state() == SharedState(halted=False, orders_last_minute=0, duplicate_recent=False)
    assert state(supplied_key=True) == SharedState(halted=False, orders_last_minute=0, duplicate_recent=False)


@pytest.mark.django_db
def test_the_last_minute_counts_the_account_s_orders_from_exactly_sixty_seconds_ago(frozen_clock):
    placed(frozen_clock, timedelta(seconds=60))
    placed(frozen_clock, timedelta(seconds=60, microseconds=1))
    placed(frozen_clock, timedelta(seconds=1), account=OTHER_ACCOUNT)
    placed(frozen_clock, timedelta(0))
    assert state().orders_last_minute == 2
    assert state(account=OTHER_ACCOUNT).orders_last_minute == 1


@pytest.mark.django_db
def test_an_identical_order_of_the_account_within_the_window_is_a_duplicate(frozen_clock):
    placed(frozen_clock, timedelta(seconds=5, microseconds=1))
    placed(frozen_clock, timedelta(seconds=1), account=OTHER_ACCOUNT)
    placed(frozen_clock, timedelta(seconds=1), quantity=Decimal("11"))
    placed(frozen_clock, timedelta(seconds=1), limit_price=Decimal("189.51"))
    placed(frozen_clock, timedelta(seconds=1), con_id=272093)
    assert state().duplicate_recent is False
    # However the first request spelled its contract: the same contract and terms are the same order.
    placed(frozen_clock, timedelta(seconds=5), symbol="", exchange="", currency="", request_hash="e" * 64)
    assert state().duplicate_recent is True
    assert state(supplied_key=True).duplicate_recent is False  # a chosen key places it on purpose


@pytest.mark.django_db
@pytest.mark.parametrize(("window", "duplicate"), [(0, False), (1, True)])
def test_a_duplicate_window_of_zero_turns_the_check_off(frozen_clock, settings, window, duplicate):
    settings.RISK_DUPLICATE_WINDOW_S = window
    placed(frozen_clock, timedelta(0))
    assert state().duplicate_recent is duplicate


@pytest.mark.django_db
def test_the_kill_switch_is_read_from_the_ledger():
    TradingSwitchEventFactory(halted=True)
    assert state().halted is True
    TradingSwitchEventFactory(halted=False)
    assert state().halted is False


@pytest.mark.django_db
def test_a_group_adds_what_its_earlier_placements_added(frozen_clock):
    placed(frozen_clock, timedelta(seconds=1), quantity=Decimal("11"))
    group = AdmissionGroup()
    assert state(group=group) == SharedState(halted=False, orders_last_minute=1, duplicate_recent=False)
    group.add(("orders", ACCOUNT), 2)
    group.add(checks.same_order_key(ACCOUNT, SAME), 1)
    assert state(group=group) == SharedState(halted=False, orders_last_minute=3, duplicate_recent=True)
    assert state(group=group, supplied_key=True).duplicate_recent is False
    assert state(group=group, account=OTHER_ACCOUNT) == SharedState(False, 0, False)


@pytest.mark.django_db
def test_a_group_reads_each_account_s_count_once(frozen_clock):
    placed(frozen_clock, timedelta(seconds=1))
    group = AdmissionGroup()
    assert state(group=group).orders_last_minute == 1
    assert state(group=group, account=OTHER_ACCOUNT).orders_last_minute == 0
    placed(frozen_clock, timedelta(0))  # committed elsewhere: the group counts what it added itself
    assert state(group=group).orders_last_minute == 1
    assert state().orders_last_minute == 2


# -- what a preview reports -------------------------------------------------------------------------
def test_each_block_is_reported_with_its_gate_code_status_and_details():
    blocks = trip(order(quantity=D("1000")), contract=contract()).collect([checks.max_quantity, checks.broker_ready])
    assert checks.blocks_payload(blocks) == [
        {
            "gate": "risk",
            "code": "risk_max_quantity",
            "http_status": 422,
            "message": "quantity 1000 exceeds RISK_MAX_ORDER_QUANTITY 100.",
            "details": {"limit": "100"},
        }
    ]
    unnamed = GatewayError(ErrorCode.INVALID_REQUEST, "bad", details={"fields": ["x"]})
    assert checks.blocks_payload([unnamed])[0]["gate"] == "validation"
