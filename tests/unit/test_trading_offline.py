"""The order services while the broker is down: what they still decide from the ledger alone.

A preview still reports the kill switch, the last minute's orders, duplicates and a reused key; a
replay still answers the recorded order; a held order can still be withdrawn; a modify is still
refused by the rules on the order's own terms. Limits (the `limits` fixture): 3 orders a minute, a
duplicate window of 5 s, quantity 100. Nothing here starts a broker connection.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from audit.models import AuditEntry
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import ErrorCode, GatewayError
from orders import services
from orders.models import Order
from orders.models import OrderStatus as S
from orders.types import OrderRequest
from tests.factories import OrderEventFactory, OrderFactory, TradingSwitchEventFactory
from tests.unit.builders import NOW

D = Decimal
ACCOUNT = "DU1234567"
BOT = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST, correlation_id="cid-bot")
OPERATOR = Actor(kind=ActorKind.USER, label="operator", source=Source.ADMIN, is_admin=True)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("limits", "frozen_clock")]


def request(cid: str = "", **fields) -> OrderRequest:
    values = {"symbol": "AAPL", "action": "BUY", "quantity": D(3), "order_type": "MKT", "account": ACCOUNT}
    values.update(fields)
    return OrderRequest(client_order_id=cid, **values)


def recorded(req: OrderRequest, ago: timedelta = timedelta(seconds=1), frozen_clock=None, **fields) -> Order:
    """An order recorded `ago` before NOW from `req` (its key and the hash of its terms)."""
    if frozen_clock is not None:
        frozen_clock.move_to(NOW - ago)
    order = OrderFactory(
        account=req.account, client_order_id=req.client_order_id, request_hash=services.request_hash(req), **fields
    )
    if frozen_clock is not None:
        frozen_clock.move_to(NOW)
    return order


def codes(result) -> list[str]:
    return [block["code"] for block in result.blocks]


def refused(call, **kwargs) -> GatewayError:
    with pytest.raises(GatewayError) as excinfo:
        call(**kwargs)
    return excinfo.value


# -- preview ----------------------------------------------------------------------------------------
def test_a_preview_while_the_broker_is_down_still_reports_the_shared_state_gates(frozen_clock):
    TradingSwitchEventFactory(halted=True)
    for n in range(3):
        recorded(request(f"old-{n}", quantity=D(n + 10)), frozen_clock=frozen_clock)
    recorded(request("same"), ago=timedelta(seconds=5), frozen_clock=frozen_clock)  # identical terms
    result = services.order_preview(request=request(), actor=BOT)
    assert codes(result) == ["broker_unavailable", "trading_halted", "risk_rate_limit", "possible_duplicate"]
    assert (result.contract, result.account, result.preview, result.would_be) == (None, ACCOUNT, None, "refused")
    assert result.what_if_error == ""
    assert result.blocks[2]["details"] == {"limit": 3, "retry_after_s": 60}
    assert Order.objects.count() == 4  # a preview records nothing


def test_a_preview_counts_only_the_account_s_own_orders_and_identical_terms(frozen_clock):
    for n in range(3):
        recorded(request(f"other-{n}", account="DU7654321"), frozen_clock=frozen_clock)
    recorded(request("bigger", quantity=D(4)), frozen_clock=frozen_clock)
    assert codes(services.order_preview(request=request(), actor=BOT)) == ["broker_unavailable"]


@pytest.mark.parametrize(("already", "bracket", "limited"), [(2, False, False), (1, True, True), (0, True, False)])
def test_a_preview_counts_every_leg_of_a_bracket_against_the_rate_limit(frozen_clock, already, bracket, limited):
    for n in range(already):
        recorded(request(f"old-{n}", quantity=D(n + 10)), frozen_clock=frozen_clock)
    exits = {"take_profit": D("200"), "stop_loss": D("100")} if bracket else {}
    result = services.order_preview(request=request(**exits), actor=BOT)
    assert ("risk_rate_limit" in codes(result)) is limited


def test_a_preview_with_a_used_key_reports_the_reuse_and_a_replay_does_not(frozen_clock):
    placed = recorded(request("k-1"), frozen_clock=frozen_clock)
    changed = services.order_preview(request=request(quantity=D(4)), actor=BOT, idempotency_key="k-1")
    assert codes(changed) == ["broker_unavailable", "idempotency_key_reused"]
    assert changed.blocks[1]["details"] == {"order_id": str(placed.pk)}
    assert changed.blocks[1]["gate"] == "idempotency"
    # The same key and terms would replay the order, as place does without the broker and without any gate.
    replay = services.order_preview(request=request(), actor=BOT, idempotency_key="k-1")
    assert (codes(replay), replay.would_be) == ([], "replayed")


# -- submit -----------------------------------------------------------------------------------------
def test_the_same_key_and_terms_replay_the_order_without_the_broker(frozen_clock):
    placed = recorded(request("k-2"), frozen_clock=frozen_clock)
    again = services.order_submit(request=request("k-2", quantity=D("3.00")), actor=BOT)
    assert (again.order.pk, again.replayed) == (placed.pk, True)
    by_header = services.order_submit(request=request(), actor=BOT, idempotency_key="k-2")
    assert (by_header.order.pk, by_header.replayed) == (placed.pk, True)
    assert not AuditEntry.objects.filter(event="gate.blocked").exists()


def test_a_key_used_for_other_terms_is_refused_and_audited(frozen_clock):
    placed = recorded(request("k-3"), frozen_clock=frozen_clock)
    exc = refused(services.order_submit, request=request("k-3", action="SELL"), actor=BOT)
    assert (exc.code, exc.http_status) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, 422)
    assert exc.details == {"order_id": str(placed.pk), "gate": "idempotency"}
    assert exc.message == "client_order_id 'k-3' was already used for a different order."
    entry = AuditEntry.objects.get(event="gate.blocked")
    assert (entry.actor_label, entry.target_id, entry.data["code"]) == ("bot", "k-3", "idempotency_key_reused")
    assert entry.data["account"] == ACCOUNT
    assert entry.data["request"]["action"] == "SELL"


def test_a_key_is_the_account_s_own():
    OrderFactory(account="DU7654321", client_order_id="k-4")
    exc = refused(services.order_submit, request=request("k-4"), actor=BOT)
    assert exc.code == ErrorCode.BROKER_UNAVAILABLE  # neither a replay nor a reuse: on to the contract lookup


@pytest.mark.parametrize(
    ("cid", "key", "message"),
    [
        ("a-1", "a-2", "client_order_id and Idempotency-Key differ."),
        ("has space", None, "client_order_id / Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 . _ : -"),
        ("", "x" * 65, "client_order_id / Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 . _ : -"),
    ],
)
def test_a_malformed_key_is_refused_before_anything_else(cid, key, message):
    exc = refused(services.order_submit, request=request(cid), actor=BOT, idempotency_key=key)
    assert (exc.code, exc.message, exc.details) == (ErrorCode.INVALID_REQUEST, message, {"fields": ["client_order_id"]})
    entry = AuditEntry.objects.get(event="gate.blocked")
    assert (entry.data["code"], entry.target_id, entry.data["account"]) == ("invalid_request", cid, ACCOUNT)


def test_a_key_of_64_allowed_characters_is_accepted():
    key = "aZ09._:-" * 8
    exc = refused(services.order_submit, request=request(), actor=BOT, idempotency_key=key)
    assert exc.code == ErrorCode.BROKER_UNAVAILABLE  # past the key rules, at the contract lookup
    assert AuditEntry.objects.get(event="gate.blocked").target_id == key


def test_an_order_without_a_key_gets_one_generated_and_the_default_account(settings):
    settings.IB_ACCOUNT = ACCOUNT
    refused(services.order_submit, request=request(account=""), actor=BOT)
    entry = AuditEntry.objects.get(event="gate.blocked")
    assert entry.target_id.startswith("gw-") and len(entry.target_id) == 27
    assert (entry.data["account"], entry.data["request"]["account"]) == (ACCOUNT, ACCOUNT)
    assert (entry.data["code"], entry.data["gate"], entry.correlation_id) == ("broker_unavailable", "", "cid-bot")


def test_a_bracket_cannot_wait_for_approval(settings):
    settings.ORDERS_ENABLED = True
    settings.APPROVAL_REQUIRED_FOR = frozenset({"api_key"})
    bracket = request("br-1", order_type="LMT", limit_price=D("100"), take_profit=D("101"))
    exc = refused(services.order_submit, request=bracket, actor=BOT)
    assert (exc.code, exc.details) == (ErrorCode.INVALID_ORDER, {"gate": "validation", "field": "take_profit"})
    assert exc.message == "Brackets cannot wait for approval yet: place the entry alone, or ask an operator."
    assert AuditEntry.objects.get(event="gate.blocked").data["code"] == "invalid_order"
    # Not held: an operator's bracket, or any bracket while orders are disabled, goes on to the checks.
    for actor, enabled in ((OPERATOR, True), (BOT, False)):
        settings.ORDERS_ENABLED = enabled
        assert refused(services.order_submit, request=bracket, actor=actor).code == ErrorCode.BROKER_UNAVAILABLE


# -- cancel -----------------------------------------------------------------------------------------
def test_a_held_order_is_withdrawn_without_the_broker():
    order = OrderEventFactory(status=S.PENDING_APPROVAL).order
    assert services.order_cancel(order_id=order.pk, actor=BOT) == order
    latest = order.events.order_by("-id").first()
    assert (latest.status, latest.code, latest.reason, latest.source) == (
        S.CANCELLED,
        "withdrawn",
        "withdrawn before approval by bot",
        "rest",
    )
    entry = AuditEntry.objects.get(event="order.withdrawn")
    assert (entry.actor_label, entry.target_id) == ("bot", str(order.pk))
    # Cancelling it again answers the order and records nothing more.
    assert services.order_cancel(order_id=order.pk, actor=BOT) == order
    assert order.events.count() == 2


@pytest.mark.parametrize("status", [S.FILLED, S.REJECTED, S.EXPIRED, S.SIMULATED])
def test_a_finished_order_cannot_be_cancelled(status):
    order = OrderEventFactory(status=status).order
    exc = refused(services.order_cancel, order_id=order.pk, actor=BOT)
    assert (exc.code, exc.http_status, exc.details) == (ErrorCode.ORDER_STATE_CONFLICT, 409, {"status": status})
    assert exc.message == f"An order in state {status} cannot be cancelled."
    assert order.events.count() == 1


def test_a_working_order_needs_the_broker_to_cancel_and_nothing_is_recorded_without_it():
    order = OrderEventFactory(status=S.SUBMITTED, broker_order_id=7).order
    assert refused(services.order_cancel, order_id=order.pk, actor=BOT).code == ErrorCode.BROKER_UNAVAILABLE
    assert list(order.events.values_list("status", flat=True)) == [S.SUBMITTED]


def test_cancelling_an_unknown_order_is_a_404():
    exc = refused(services.order_cancel, order_id="not-a-uuid", actor=BOT)
    assert (exc.code, exc.http_status) == (ErrorCode.ORDER_NOT_FOUND, 404)


# -- modify -----------------------------------------------------------------------------------------
def working(filled: Decimal | None = None, **fields) -> Order:
    """A working LMT BUY 10 @ 189.50, `filled` of it done."""
    event = OrderEventFactory(status=S.SUBMITTED, broker_order_id=77, order__account=ACCOUNT, **fields)
    if filled:
        OrderEventFactory(
            order=event.order,
            status=S.PARTIALLY_FILLED,
            broker_order_id=77,
            filled_quantity=filled,
            remaining_quantity=event.order.quantity - filled,
        )
    return event.order


def test_a_modify_that_changes_nothing_records_nothing():
    order = working()
    assert services.order_modify(order_id=order.pk, actor=BOT, quantity=D(10), limit_price=D("189.5")) == order
    assert services.order_modify(order_id=order.pk, actor=BOT) == order
    assert order.events.count() == 1
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("quantity", ["3.99", "0.5"])
def test_a_modify_below_the_filled_quantity_is_refused_and_audited(quantity):
    order = working(filled=D(4))
    exc = refused(services.order_modify, order_id=order.pk, actor=OPERATOR, quantity=D(quantity))
    assert (exc.code, exc.details) == (ErrorCode.INVALID_ORDER, {"gate": "validation", "field": "quantity"})
    assert exc.message == "quantity cannot go below the filled quantity."
    entry = AuditEntry.objects.get(event="gate.blocked")
    assert (entry.actor_label, entry.data["account"], entry.data["request"]["quantity"]) == (
        "operator",
        ACCOUNT,
        str(D(quantity).normalize()),
    )


def test_a_modify_down_to_the_filled_quantity_goes_on_to_the_checks():
    order = working(filled=D(4))
    exc = refused(services.order_modify, order_id=order.pk, actor=OPERATOR, quantity=D(4))
    assert exc.code == ErrorCode.BROKER_UNAVAILABLE  # the quote for the price checks needs the broker


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        ({"quantity": D(101)}, ErrorCode.RISK_MAX_QUANTITY),
        ({"quantity": D(0)}, ErrorCode.INVALID_ORDER),
        ({"stop_price": D(180)}, ErrorCode.INVALID_ORDER),  # a limit order takes no stop price
    ],
)
def test_a_modify_runs_the_order_s_own_gates_on_the_new_terms(terms, code):
    order = working()
    assert refused(services.order_modify, order_id=order.pk, actor=OPERATOR, **terms).code == code
    assert order.events.count() == 1


def test_a_modify_reruns_the_account_mode_gate(settings):
    order = working()
    settings.TRADING_MODE = "live"
    exc = refused(services.order_modify, order_id=order.pk, actor=OPERATOR, limit_price=D("189"))
    assert (exc.code, exc.http_status) == (ErrorCode.ACCOUNT_MODE_MISMATCH, 403)


@pytest.mark.parametrize("status", [S.PENDING_APPROVAL, S.PENDING_SUBMIT, S.CANCEL_PENDING, S.FILLED, S.UNKNOWN])
def test_only_a_working_order_can_be_modified(status):
    order = OrderEventFactory(status=status).order
    exc = refused(services.order_modify, order_id=order.pk, actor=OPERATOR, quantity=D(5))
    assert (exc.code, exc.http_status, exc.details) == (ErrorCode.ORDER_NOT_MODIFIABLE, 409, {"status": status})
    assert exc.message == f"An order in state {status} cannot be modified."


@pytest.mark.parametrize("status", [S.SUBMITTED, S.PARTIALLY_FILLED, S.INACTIVE])
def test_working_orders_are_modifiable_up_to_the_broker(status):
    order = OrderEventFactory(status=status).order
    exc = refused(services.order_modify, order_id=order.pk, actor=OPERATOR, limit_price=D("189"))
    assert exc.code == ErrorCode.BROKER_UNAVAILABLE


def test_the_terms_in_force_are_the_latest_modification():
    order = working()
    assert services.order_terms(order) == {"quantity": D(10), "limit_price": D("189.50"), "stop_price": None}
    OrderEventFactory(
        order=order, status=S.SUBMITTED, data={"modified": {"quantity": "8", "limit_price": "189", "stop_price": None}}
    )
    OrderEventFactory(order=order, status=S.SUBMITTED, data={"client_id": 3})
    assert services.order_terms(order) == {"quantity": D(8), "limit_price": D(189), "stop_price": None}


def test_the_client_id_an_order_was_placed_through_is_its_latest_recorded_one():
    order = working()
    assert services.order_client_id(order) is None
    OrderEventFactory(order=order, status=S.SUBMITTED, data={"client_id": 3})
    OrderEventFactory(order=order, status=S.SUBMITTED, data={"other": 1})
    assert services.order_client_id(order) == 3


def test_a_modify_keeps_the_terms_it_does_not_change():
    stop = working(order__order_type="STP", order__limit_price=None, order__stop_price=D("180"))
    exc = refused(services.order_modify, order_id=stop.pk, actor=OPERATOR, quantity=D(5))
    assert exc.code == ErrorCode.BROKER_UNAVAILABLE  # past the order's own gates: it is still a stop at 180
    limit = working()
    exc = refused(services.order_modify, order_id=limit.pk, actor=OPERATOR, quantity=D(5))
    assert exc.code == ErrorCode.BROKER_UNAVAILABLE  # and still a limit at 189.50
    entry_request = AuditEntry.objects.filter(event="gate.blocked").order_by("seq")
    assert [(e.data["request"]["stop_price"], e.data["request"]["limit_price"]) for e in entry_request] == [
        ("180", None),
        (None, "189.5"),
    ]


# -- a bracket's exits ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "exit_action"), [("BUY", "SELL"), ("BUY_TO_COVER", "SELL"), ("SELL", "BUY"), ("SELL_SHORT", "BUY")]
)
def test_a_bracket_s_exits_close_the_entry_good_till_cancelled(action, exit_action):
    from orders.services.trading import bracket_children

    entry = request(
        "br-2", action=action, order_type="LMT", limit_price=D(100), take_profit=D(110), stop_loss=D(90), tif="DAY"
    )
    (take_profit, stop_loss) = bracket_children(entry)
    assert take_profit == (
        "take_profit",
        request("br-2.tp", action=exit_action, order_type="LMT", limit_price=D(110), tif="GTC"),
    )
    assert stop_loss == (
        "stop_loss",
        request("br-2.sl", action=exit_action, order_type="STP", stop_price=D(90), tif="GTC"),
    )
    assert bracket_children(replace(entry, stop_loss=None)) == [take_profit]
    assert bracket_children(replace(entry, take_profit=None)) == [stop_loss]
    assert bracket_children(replace(entry, take_profit=None, stop_loss=None)) == []
