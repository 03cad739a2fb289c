"""The order services' safety rules against the simulated gateway: who is held for approval, the gates
re-run on approve and modify, modify never below the filled quantity, idempotency on every field."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal

import pytest

from audit.models import AuditEntry
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import ErrorCode, GatewayError
from orders import services
from orders.models import Order
from orders.models import OrderStatus as S
from orders.services.brackets import NOT_SENT
from orders.types import OrderRequest
from tests.conftest import pipeline_queued, wait_for
from tests.factories import OrderEventFactory

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR = Actor(kind=ActorKind.USER, label="operator", source=Source.ADMIN, is_admin=True)


def _request(cid: str, **fields) -> OrderRequest:
    values = {"symbol": "AAPL", "action": "BUY", "quantity": Decimal(3), "order_type": "MKT", "client_order_id": cid}
    values.update(fields)
    return OrderRequest(**values)


def _sent(sim_gateway) -> list[str]:
    return [o.order_ref for o in sim_gateway.received_orders() if not o.what_if]


def _cancels(sim, count: int) -> list[int]:
    """The order ids the gateway was asked to cancel, once it has `count` of them (it reads its socket
    on its own thread)."""
    from tests.conftest import wait_for

    wait_for(lambda: len(sim.received_cancels()) >= count, message=f"{count} cancel(s) at the gateway")
    return [c.order_id for c in sim.received_cancels()]


def _statuses(order) -> list[str]:
    return list(order.events.order_by("id").values_list("status", flat=True))


@contextmanager
def _recorder_stalled(runtime):
    """The recorder writes nothing (broker reports, acknowledgements) until the block ends."""

    class Stall(threading.Event):
        pass

    stall = Stall()
    runtime.recorder.handlers[Stall] = lambda event: event.wait(30)
    runtime.recorder.put(stall)
    try:
        yield
    finally:
        stall.set()


@pytest.fixture
def quiet_market(sim_gateway):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    return sim_gateway


# -- who is held: the actor's kind, whatever door it came through ------------------------------------
@pytest.mark.parametrize(
    ("required", "actor", "held"),
    [
        ({"api_key"}, Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST), True),
        ({"api_key"}, Actor(kind=ActorKind.API_KEY, label="bot", source=Source.WS), True),
        ({"user"}, Actor(kind=ActorKind.USER, label="trader", source=Source.REST), True),
        ({"mcp"}, Actor(kind=ActorKind.MCP, label="agent", source=Source.MCP), True),
        ({"mcp"}, Actor(kind=ActorKind.API_KEY, label="bot", source=Source.MCP), False),
        ({"api_key"}, Actor(kind=ActorKind.USER, label="trader", source=Source.REST), False),
        (set(), Actor(kind=ActorKind.MCP, label="agent", source=Source.MCP), False),
    ],
    ids=["key-rest", "key-ws", "user-rest", "agent-mcp", "key-through-mcp", "user-not-listed", "nobody-listed"],
)
def test_approval_holds_by_the_actors_kind(ib_runtime, quiet_market, orders_enabled, required, actor, held):
    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset(required)
    order = services.order_submit(request=_request("who-1"), actor=actor).order
    if held:
        assert _statuses(order) == [S.PENDING_APPROVAL]
        assert _sent(quiet_market) == []
    else:
        assert _statuses(order)[0] == S.PENDING_SUBMIT
        assert _sent(quiet_market) == ["who-1"]


def test_approval_is_refused_when_the_account_no_longer_matches_the_mode(ib_runtime, quiet_market, orders_enabled):
    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset({"mcp"})
    agent = Actor(kind=ActorKind.MCP, label="agent", source=Source.MCP)
    order = services.order_submit(request=_request("mode-1"), actor=agent).order
    orders_enabled.TRADING_MODE = "live"  # the paper account may not be traded from live mode
    with pytest.raises(GatewayError) as excinfo:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert excinfo.value.code == ErrorCode.ACCOUNT_MODE_MISMATCH
    assert excinfo.value.http_status == 403
    assert _statuses(order) == [S.PENDING_APPROVAL]
    assert _sent(quiet_market) == []
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert (blocked.actor_label, blocked.data["code"]) == ("operator", "account_mode_mismatch")


# -- modify -------------------------------------------------------------------------------------
def _working(filled: Decimal = Decimal(0)) -> Order:
    """A working LMT BUY 10 @ 189.50 on the paper account, `filled` of it already done."""
    event = OrderEventFactory(status=S.SUBMITTED, broker_order_id=77)
    if filled:
        OrderEventFactory(
            order=event.order,
            status=S.PARTIALLY_FILLED,
            broker_order_id=77,
            filled_quantity=filled,
            remaining_quantity=event.order.quantity - filled,
        )
    return event.order


def _modify_refused(order, **terms) -> GatewayError:
    with pytest.raises(GatewayError) as excinfo:
        services.order_modify(order_id=order.pk, actor=OPERATOR, **terms)
    return excinfo.value


@pytest.mark.parametrize("quantity", ["3.99", "1"])
def test_modify_never_goes_below_the_filled_quantity(ib_runtime, quiet_market, quantity):
    order = _working(filled=Decimal(4))
    exc = _modify_refused(order, quantity=Decimal(quantity))
    assert exc.code == ErrorCode.INVALID_ORDER
    assert exc.details == {"gate": "validation", "field": "quantity"}
    assert exc.message == "quantity cannot go below the filled quantity."
    assert _statuses(order) == [S.SUBMITTED, S.PARTIALLY_FILLED]
    assert AuditEntry.objects.get(event="gate.blocked").data["code"] == "invalid_order"
    assert _sent(quiet_market) == []


def test_modify_down_to_exactly_the_filled_quantity_goes_on_to_the_other_gates(ib_runtime, quiet_market, settings):
    settings.ORDERS_ENABLED = False
    order = _working(filled=Decimal(4))
    exc = _modify_refused(order, quantity=Decimal(4))
    # Past the filled-quantity rule, it reached arming: orders are disabled here.
    assert exc.details["gate"] == "arming"
    assert exc.message == "Orders are disabled (ORDERS_ENABLED=false)."


def test_modify_reruns_the_account_mode_gate(ib_runtime, quiet_market, orders_enabled):
    order = _working()
    orders_enabled.TRADING_MODE = "live"
    exc = _modify_refused(order, limit_price=Decimal("189.00"))
    assert exc.code == ErrorCode.ACCOUNT_MODE_MISMATCH
    assert exc.http_status == 403
    assert _statuses(order) == [S.SUBMITTED]
    assert _sent(quiet_market) == []


def test_modify_reruns_the_price_collar_on_the_new_price(ib_runtime, quiet_market, orders_enabled):
    order = _working()
    exc = _modify_refused(order, limit_price=Decimal("150.00"))
    assert exc.code == ErrorCode.RISK_PRICE_COLLAR
    assert _statuses(order) == [S.SUBMITTED]
    assert _sent(quiet_market) == []


def test_a_modify_that_changes_nothing_is_a_no_op(ib_runtime, quiet_market):
    order = _working()
    services.order_modify(order_id=order.pk, actor=OPERATOR, quantity=Decimal(10), limit_price=Decimal("189.50"))
    assert _statuses(order) == [S.SUBMITTED]
    assert not AuditEntry.objects.filter(event="order.modified").exists()


@pytest.mark.parametrize("status", [S.PENDING_APPROVAL, S.PENDING_SUBMIT, S.FILLED, S.CANCELLED, S.SIMULATED])
def test_only_working_orders_can_be_modified(ib_runtime, status):
    order = OrderEventFactory(status=status).order
    exc = _modify_refused(order, quantity=Decimal(5))
    assert exc.code == ErrorCode.ORDER_NOT_MODIFIABLE
    assert exc.http_status == 409
    assert exc.details == {"status": status}


# -- idempotency on every field of the body -----------------------------------------------------------
CHANGED = {
    "symbol": "MSFT",
    "action": "SELL",
    "quantity": Decimal(4),
    "order_type": "LMT",
    "sec_type": "FUT",
    "exchange": "ARCA",
    "currency": "EUR",
    "primary_exchange": "NYSE",
    "expiry": "20260320",
    "strike": Decimal(100),
    "right": "C",
    "multiplier": "100",
    "con_id": 1,
    "limit_price": Decimal("189.00"),
    "stop_price": Decimal("180.00"),
    "trail_amount": Decimal(1),
    "trail_percent": Decimal(1),
    "tif": "GTC",
    "outside_rth": True,
    "take_profit": Decimal(200),
    "stop_loss": Decimal(180),
}


def test_the_same_key_with_any_field_changed_is_refused(ib_runtime, quiet_market):
    bot = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST)
    first = services.order_submit(request=_request("idem-1"), actor=bot)
    assert first.replayed is False
    for name, value in CHANGED.items():
        with pytest.raises(GatewayError) as excinfo:
            services.order_submit(request=replace(_request("idem-1"), **{name: value}), actor=bot)
        assert excinfo.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED, name
        assert excinfo.value.http_status == 422
        assert excinfo.value.details["order_id"] == str(first.order.pk)
    assert Order.objects.count() == 1


def test_the_same_key_and_body_replays_the_order_however_numbers_and_the_account_are_written(ib_runtime, quiet_market):
    bot = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST)
    first = services.order_submit(request=_request("idem-2"), actor=bot)
    again = services.order_submit(
        request=_request("idem-2", quantity=Decimal("3.000"), account=first.order.account), actor=bot
    )
    by_header = services.order_submit(request=_request(""), actor=bot, idempotency_key="idem-2")
    assert (again.replayed, again.order.pk) == (True, first.order.pk)
    assert (by_header.replayed, by_header.order.pk) == (True, first.order.pk)
    assert Order.objects.count() == 1


# -- preview: the whole chain, dry --------------------------------------------------------------------
BOT = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST)


def _codes(result) -> list[str]:
    return [b["code"] for b in result.blocks]


@pytest.mark.parametrize(
    ("enabled", "required", "would_be"),
    [(False, set(), "simulated"), (True, set(), "submitted"), (True, {"api_key"}, "pending_approval")],
)
def test_a_clean_preview_says_what_placing_would_record(
    ib_runtime, quiet_market, settings, enabled, required, would_be
):
    settings.ORDERS_ENABLED = enabled
    settings.APPROVAL_REQUIRED_FOR = frozenset(required)
    result = services.order_preview(request=_request("pv-1"), actor=BOT)
    assert (result.blocks, result.would_be, result.what_if_error) == ([], would_be, "")
    assert result.contract.symbol == "AAPL"
    assert result.account.startswith("DU")
    assert result.preview.commission > 0
    assert Order.objects.count() == 0
    assert _sent(quiet_market) == []


def test_a_preview_reports_every_gate_that_would_block(ib_runtime, quiet_market, settings):
    settings.RISK_MAX_ORDER_QUANTITY = Decimal(5)
    request = _request("pv-2", quantity=Decimal(10), order_type="LMT", limit_price=Decimal("150.00"))
    result = services.order_preview(request=request, actor=BOT)
    assert result.would_be == "refused"
    assert _codes(result) == ["risk_max_quantity", "risk_price_collar"]
    assert result.blocks[0] == {
        "gate": "risk",
        "code": "risk_max_quantity",
        "http_status": 422,
        "message": "quantity 10 exceeds RISK_MAX_ORDER_QUANTITY 5.",
        "details": {"limit": "5"},
    }
    assert result.blocks[1]["details"]["field"] == "limit_price"
    assert Order.objects.count() == 0


def test_a_preview_names_each_refusal_once(ib_runtime, quiet_market):
    # The exit on the wrong side fails both the shape check and the check against the entry.
    request = _request("pv-3", order_type="LMT", limit_price=Decimal("190.00"), take_profit=Decimal("189.00"))
    result = services.order_preview(request=request, actor=BOT)
    assert _codes(result) == ["invalid_order"]
    assert result.blocks[0]["details"] == {"field": "take_profit"}


def test_a_preview_sees_the_shared_state_gates(ib_runtime, quiet_market, settings):
    first = services.order_submit(request=_request("pv-4"), actor=BOT).order
    reused = services.order_preview(request=_request("pv-4", quantity=Decimal(4)), actor=BOT)
    assert _codes(reused) == ["idempotency_key_reused"]
    assert reused.blocks[0]["details"]["order_id"] == str(first.pk)
    services.trading_halt(actor=OPERATOR, reason="incident")
    halted = services.order_preview(request=_request("pv-5"), actor=BOT)
    assert _codes(halted) == ["trading_halted"]
    assert halted.blocks[0]["http_status"] == 423
    assert Order.objects.count() == 1


def test_a_preview_of_an_unknown_contract_stops_there(ib_runtime, quiet_market):
    result = services.order_preview(request=_request("pv-6", symbol="NOSUCHTHING"), actor=BOT)
    assert _codes(result) == ["contract_not_found"]
    assert result.blocks[0]["gate"] == "validation"  # errors without a gate of their own are validation
    assert (result.contract, result.preview, result.would_be) == (None, None, "refused")


def test_a_bracket_refused_by_the_halt_latch_sends_none_of_its_exits(ib_runtime, quiet_market, orders_enabled):
    from brokers import runtime

    # A halt closes the connection's latch before its global cancel: an order already past the gates
    # meets the closed latch at the send.
    runtime.adapter().order_sends_blocked(blocked=True)
    request = _request(
        "latch-1",
        order_type="LMT",
        limit_price=Decimal("189.00"),
        take_profit=Decimal("195.00"),
        stop_loss=Decimal("185.00"),
    )
    with pytest.raises(GatewayError) as excinfo:
        services.order_submit(request=request, actor=BOT)
    assert excinfo.value.code == ErrorCode.TRADING_HALTED
    assert excinfo.value.http_status == 423
    entry = Order.objects.get(client_order_id="latch-1")
    assert _statuses(entry) == [S.PENDING_SUBMIT, S.REJECTED]
    assert entry.events.order_by("-id").first().code == "trading_halted"
    children = list(entry.children.order_by("role"))
    assert [c.role for c in children] == ["stop_loss", "take_profit"]
    for child in children:
        assert _statuses(child) == [S.PENDING_SUBMIT, S.REJECTED]
        rejection = child.events.order_by("-id").first()
        assert rejection.reason == "The bracket's entry was not placed, so this exit was not sent."
        assert rejection.source == "rest"
        audit = AuditEntry.objects.get(event="order.rejected", target_id=str(child.pk))
        assert (audit.actor_label, audit.data["status"]) == ("bot", "rejected")
    assert _sent(quiet_market) == []
    runtime.adapter().order_sends_blocked(blocked=False)


def test_a_preview_asks_the_broker_about_exactly_the_order_given(ib_runtime, quiet_market):
    request = _request(
        "",
        action="SELL_SHORT",
        quantity=Decimal(7),
        order_type="STP_LMT",
        limit_price=Decimal("186.00"),
        stop_price=Decimal("187.00"),
        tif="GTC",
        outside_rth=True,
    )
    result = services.order_preview(request=request, actor=BOT)
    assert result.blocks == []
    (what_if,) = quiet_market.received_orders()
    assert what_if.what_if is True
    assert (what_if.symbol, what_if.action, what_if.total_quantity, what_if.order_type) == (
        "AAPL",
        "SELL",
        7,
        "STP LMT",
    )
    assert (what_if.lmt_price, what_if.aux_price, what_if.tif, what_if.outside_rth) == (186, 187, "GTC", True)
    assert what_if.account == quiet_market.account.code  # the account it would trade in, not IB's default
    assert Order.objects.count() == 0


# -- the kill switch at the broker connection ---------------------------------------------------------
@pytest.fixture
def no_halt_sweep(monkeypatch):
    """The periodic sweep and the watch of the kill switch also set the latch from the ledger: off, so only the
    service under test does."""
    from brokers import events

    monkeypatch.delitem(events._chores, "trading.halt_sweep")
    monkeypatch.delitem(events._chores, "trading.halt_watch")


def test_halt_closes_the_connections_latch_and_only_resume_opens_it(ib_runtime, quiet_market, no_halt_sweep):
    assert ib_runtime.worker.sends_blocked is False
    services.trading_halt(actor=OPERATOR, reason="incident")
    assert ib_runtime.worker.sends_blocked is True
    assert services.halt_progress().error == ""
    services.trading_resume(actor=OPERATOR, reason="fixed")
    assert ib_runtime.worker.sends_blocked is False
    assert services.trading_halt_sweep() is None  # nothing to sweep while trading
    assert services.halt_progress().working_orders is None


def test_the_kill_switch_read_before_each_send_follows_every_halt_and_resume(ib_runtime, no_halt_sweep):
    from orders.selectors import trading_halted_before_send

    assert trading_halted_before_send() is False
    for halted in (True, False, True, False):
        if halted:
            services.trading_halt(actor=OPERATOR, reason="incident")
        else:
            services.trading_resume(actor=OPERATOR, reason="fixed")
        assert trading_halted_before_send() is halted
        assert trading_halted_before_send() is halted  # read again, as the same row says


def test_while_halted_the_sweep_cancels_orders_placed_elsewhere(ib_runtime, quiet_market):
    from ib_async import IB, LimitOrder, Stock

    from tests.conftest import wait_for

    services.trading_halt(actor=OPERATOR, reason="incident")
    outside = IB()
    outside.connect("127.0.0.1", quiet_market.port, clientId=7, timeout=5)
    try:
        outside.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 185.0, orderRef="outside-1"))
        wait_for(
            lambda: AuditEntry.objects.filter(event="trading.halt_sweep").exists(), message="the sweep found the order"
        )
    finally:
        outside.disconnect()
    sweep = AuditEntry.objects.filter(event="trading.halt_sweep").first()
    assert sweep.data["working_orders"] >= 1
    assert "outside-1" in sweep.data["refs"]
    assert (sweep.actor_kind, sweep.target_type) == ("system", "trading")
    wait_for(lambda: all(o.status == "Cancelled" for o in quiet_market.orders()), message="cancelled at the broker")
    wait_for(lambda: services.halt_progress().working_orders == 0, message="the sweep saw nothing working")
    assert services.halt_progress().checked_at is not None
    # An outage: the sweep says why it could not look, and keeps the last count it saw.
    quiet_market.faults.refuse_connections(60)
    quiet_market.faults.drop_all_connections()
    wait_for(lambda: ib_runtime.worker.state != "connected", message="disconnected")
    progress = services.trading_halt_sweep()
    assert progress == services.halt_progress()
    assert (progress.working_orders, progress.checked_at) == (0, None)
    assert progress.error.startswith("The broker is not connected")


def test_the_sweep_s_audit_entry_names_at_most_fifty_orders(ib_runtime, quiet_market, no_halt_sweep):
    from ib_async import IB, LimitOrder, Stock

    from tests.conftest import wait_for

    services.trading_halt(actor=OPERATOR, reason="incident")
    outside = IB()
    outside.connect("127.0.0.1", quiet_market.port, clientId=7, timeout=5)
    try:
        for n in range(51):
            outside.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 185.0, orderRef=f"out-{n}"))

        def all_working() -> bool:
            outside.sleep(0)  # the client paces its messages on its own event loop: let it send
            return len([o for o in quiet_market.orders() if o.status == "Submitted"]) == 51

        wait_for(all_working, message="51 working")
        progress = services.trading_halt_sweep()
    finally:
        outside.disconnect()
    assert progress.working_orders == 51
    sweep = AuditEntry.objects.get(event="trading.halt_sweep")
    assert (sweep.data["working_orders"], len(sweep.data["refs"])) == (51, 50)


def test_approving_while_halted_keeps_the_order_waiting(ib_runtime, quiet_market, orders_enabled):
    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset({"mcp"})
    agent = Actor(kind=ActorKind.MCP, label="agent", source=Source.MCP)
    order = services.order_submit(request=_request("halt-hold-1"), actor=agent).order
    services.trading_halt(actor=OPERATOR, reason="incident")
    with pytest.raises(GatewayError) as excinfo:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert excinfo.value.code == ErrorCode.TRADING_HALTED
    assert _statuses(order) == [S.PENDING_APPROVAL]  # refused by the gate, not burnt at the latch
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert (blocked.data["code"], blocked.data["account"]) == ("trading_halted", order.account)
    services.trading_resume(actor=OPERATOR)
    services.order_approve(order_id=order.pk, actor=OPERATOR)
    approval = order.events.order_by("id")[1]
    assert (approval.status, approval.source, approval.reason) == (S.PENDING_SUBMIT, "admin", "approved by operator")
    assert _sent(quiet_market) == ["halt-hold-1"]


def test_a_preview_goes_on_past_checks_it_had_to_skip(ib_runtime, quiet_market, settings):
    settings.QUOTE_STALE_AFTER_S = 0  # no price: notional, collar and buying power cannot run
    settings.ORDERS_ENABLED = True
    ib_runtime.worker.reconciled.clear()  # and the broker is not ready
    result = services.order_preview(request=_request("pv-7"), actor=BOT)
    assert _codes(result) == ["risk_stale_market_data", "broker_unavailable"]
    assert result.blocks[1]["gate"] == "arming"


def test_a_trailing_preview_carries_its_trail(ib_runtime, quiet_market):
    request = _request("", action="SELL", order_type="TRAIL", trail_amount=Decimal("2.50"))
    services.order_preview(request=request, actor=BOT)
    (what_if,) = quiet_market.received_orders()
    assert (what_if.order_type, what_if.aux_price) == ("TRAIL", Decimal("2.5"))


# -- cancel -------------------------------------------------------------------------------------------
def _resting(cid: str) -> Order:
    """A LMT BUY 3 @ 185 resting at the broker (the market is quiet at 190)."""
    from tests.conftest import wait_for

    order = services.order_submit(
        request=_request(cid, order_type="LMT", limit_price=Decimal("185.00")), actor=BOT
    ).order
    wait_for(lambda: S.SUBMITTED in _statuses(order), message="acknowledged")
    return order


def test_a_cancel_is_on_record_under_the_actor_who_asked_even_when_the_broker_answers_first(
    ib_runtime, quiet_market, orders_enabled
):
    from tests.conftest import wait_for

    order = _resting("cx-2")
    broker_id = order.events.filter(status=S.SUBMITTED).first().broker_order_id
    assert services.order_cancel(order_id=order.pk, actor=OPERATOR) == order
    requested = AuditEntry.objects.get(event="order.cancel_requested")
    assert (requested.actor_label, requested.target_id) == ("operator", str(order.pk))
    assert requested.data["broker_order_id"] == broker_id
    wait_for(lambda: _statuses(order)[-1] == S.CANCELLED, message="cancelled at the broker")
    assert _cancels(quiet_market, 1) == [broker_id]


def test_a_cancel_request_becomes_the_order_s_cancel_pending(ib_runtime, quiet_market):
    order = OrderEventFactory(status=S.SUBMITTED, broker_order_id=78).order
    services.order_cancel(order_id=order.pk, actor=OPERATOR)
    pending = order.events.get(status=S.CANCEL_PENDING)
    assert (pending.source, pending.broker_order_id) == ("admin", 78)
    requested = AuditEntry.objects.get(event="order.cancel_requested")
    assert (requested.actor_label, requested.data["status"], requested.data["previous"]) == (
        "operator",
        S.CANCEL_PENDING,
        S.SUBMITTED,
    )
    assert _cancels(quiet_market, 1) == [78]


def test_a_repeated_cancel_answers_the_order_and_sends_nothing_again(ib_runtime, quiet_market):
    """The broker already has this order's cancel: a second would only be refused there (10148)."""
    order = OrderEventFactory(status=S.CANCEL_PENDING, broker_order_id=79).order
    assert services.order_cancel(order_id=order.pk, actor=OPERATOR).pk == order.pk
    assert _statuses(order) == [S.CANCEL_PENDING]
    other = OrderEventFactory(status=S.SUBMITTED, broker_order_id=80).order
    services.order_cancel(order_id=other.pk, actor=OPERATOR)
    assert _cancels(quiet_market, 1) == [80]  # one socket, in order: a cancel of 79 would have come first


def test_an_order_the_broker_never_acknowledged_is_not_cancelled_by_guesswork(ib_runtime, quiet_market):
    order = OrderEventFactory(status=S.PENDING_SUBMIT).order
    with pytest.raises(GatewayError) as excinfo:
        services.order_cancel(order_id=order.pk, actor=OPERATOR)
    exc = excinfo.value
    assert (exc.code, exc.http_status, exc.details) == (
        ErrorCode.ORDER_STATE_CONFLICT,
        409,
        {"status": "pending_submit"},
    )
    assert exc.message == "The broker has not acknowledged this order; reconciliation will settle it."
    assert _statuses(order) == [S.PENDING_SUBMIT]
    assert quiet_market.received_cancels() == []


def _unknown_order(minutes_ago: float):
    from datetime import timedelta

    from django.utils import timezone

    order = OrderEventFactory(status=S.PENDING_SUBMIT).order
    OrderEventFactory(order=order, status=S.UNKNOWN, at=timezone.now() - timedelta(minutes=minutes_ago))
    return order


def test_an_unknown_order_the_broker_has_no_trace_of_is_cancelled_on_request(ib_runtime, quiet_market):
    order = _unknown_order(minutes_ago=10)
    services.order_cancel(order_id=order.pk, actor=OPERATOR)
    assert _statuses(order) == [S.PENDING_SUBMIT, S.UNKNOWN, S.CANCELLED]
    closed = order.events.order_by("-id").first()
    assert (closed.code, closed.source) == ("not_at_broker", "admin")
    assert closed.reason.startswith("Cancelled by operator: the broker has no trace of this order")
    assert AuditEntry.objects.get(event="order.closed", target_id=str(order.pk)).actor_label == "operator"
    assert quiet_market.received_cancels() == []  # nothing to cancel there


def test_an_unknown_order_the_broker_reports_is_not_closed_but_reconciled(ib_runtime, quiet_market):
    from ib_async import IB, LimitOrder, Stock

    from tests.conftest import wait_for

    order = _unknown_order(minutes_ago=10)
    outside = IB()  # the order as the broker holds it (sent by a process that died before it heard back)
    outside.connect("127.0.0.1", quiet_market.port, clientId=7, timeout=5)
    try:
        outside.placeOrder(
            Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 10, 185.0, orderRef=order.client_order_id, tif="GTC")
        )
        wait_for(lambda: [o.order_ref for o in quiet_market.orders()] == [order.client_order_id], message="at broker")
    finally:
        outside.disconnect()
    with pytest.raises(GatewayError) as excinfo:
        services.order_cancel(order_id=order.pk, actor=OPERATOR)
    assert (excinfo.value.code, excinfo.value.http_status) == (ErrorCode.ORDER_STATE_CONFLICT, 409)
    assert excinfo.value.details == {"status": "unknown", "at_broker": True}
    assert S.CANCELLED not in _statuses(order)
    assert not AuditEntry.objects.filter(event="order.closed").exists()


def test_an_unknown_order_whose_send_may_still_arrive_is_not_closed_yet(ib_runtime, quiet_market, settings):
    settings.IB_REQUEST_TIMEOUT = 10
    order = _unknown_order(minutes_ago=0)
    with pytest.raises(GatewayError) as excinfo:
        services.order_cancel(order_id=order.pk, actor=OPERATOR)
    assert excinfo.value.http_status == 409
    assert excinfo.value.details["status"] == "unknown" and 0 < excinfo.value.details["retry_after_s"] <= 20
    assert _statuses(order) == [S.PENDING_SUBMIT, S.UNKNOWN]


# -- buying power, quotes and what the broker says ---------------------------------------------------
def test_the_buying_power_estimate_uses_the_account_s_available_funds(ib_runtime, quiet_market, settings):
    settings.RISK_MAX_ORDER_QUANTITY = Decimal(10**9)
    settings.RISK_MAX_ORDER_NOTIONAL = Decimal(10**12)
    # 1,000,000 of cash at a 50% initial margin buys 10,526 shares at 190, not 10,527.
    services.order_preview(request=_request("", quantity=Decimal(10526)), actor=BOT)
    result = services.order_preview(request=_request("", quantity=Decimal(10527)), actor=BOT)
    assert _codes(result) == ["risk_buying_power"]
    details = result.blocks[0]["details"]
    assert Decimal(details["margin_estimate"]) > Decimal(details["available_funds"]) > 0
    with pytest.raises(GatewayError) as excinfo:
        services.order_submit(request=_request("bp-2", quantity=Decimal(10527)), actor=BOT)
    assert excinfo.value.code == ErrorCode.RISK_BUYING_POWER


def _subscribed(sim, symbol: str) -> int:
    con_id = sim.con_id(symbol)
    return sum(1 for s in list(sim.sessions) for inst in list(s.mkt.values()) if inst.con_id == con_id)


def test_the_order_path_keeps_streaming_its_latest_contracts_and_no_more(ib_runtime, quiet_market, monkeypatch):
    from brokers import runtime
    from orders.services import checks
    from tests.conftest import wait_for

    monkeypatch.setattr(checks, "ORDER_QUOTE_STREAMS", 2)

    def price_checked(symbol: str, n: int) -> None:
        services.order_submit(request=_request(f"qs-{n}", symbol=symbol), actor=BOT)  # simulated: checks only
        wait_for(lambda: runtime.adapter().quote_cached(con_id=quiet_market.con_id(symbol)), message=symbol)

    price_checked("AAPL", 1)
    price_checked("MSFT", 2)
    price_checked("AAPL", 3)  # the streamed quote: AAPL is the most recent again
    price_checked("SPY", 4)
    wait_for(lambda: _subscribed(quiet_market, "MSFT") == 0, message="the oldest stream released")
    assert (_subscribed(quiet_market, "AAPL"), _subscribed(quiet_market, "SPY")) == (1, 1)
    # A new broker connection holds none of the old streams: the next order opens its own.
    runtime.stop()
    runtime.start(host="127.0.0.1", port=quiet_market.port, client_id=1)
    wait_for(lambda: runtime.current().worker.reconciled.is_set(), message="reconnected")
    price_checked("AAPL", 5)
    assert _subscribed(quiet_market, "AAPL") == 1


def test_a_preview_says_why_the_broker_could_not_price_the_order(ib_runtime, quiet_market):
    quiet_market.faults.never_answer(3)  # placeOrder, which carries the what-if
    ib_runtime.worker.request_timeout = 0.5
    result = services.order_preview(request=_request(""), actor=BOT)
    assert (result.blocks, result.preview, result.would_be) == ([], None, "simulated")
    assert result.what_if_error == "The broker did not answer within 0.5s."


def test_a_send_whose_outcome_is_unknown_is_recorded_so_and_settled_by_the_broker(ib_runtime, quiet_market, settings):
    from brokers import runtime
    from tests.conftest import wait_for

    # A first order leaves the contract and a streamed quote in memory: the next one's checks need no call.
    services.order_submit(request=_request("warm-1"), actor=BOT)
    wait_for(lambda: runtime.adapter().quote_cached(con_id=quiet_market.con_id("AAPL")), message="streamed quote")
    settings.ORDERS_ENABLED = True
    ib_runtime.worker.request_timeout = 0.5
    release = threading.Event()
    ib_runtime.worker.run_soon(lambda ib: release.wait(30))  # the IB thread stops answering
    try:
        result = services.order_submit(request=_request("unk-1", quantity=Decimal(4)), actor=BOT)
        order = result.order
        assert _statuses(order) == [S.PENDING_SUBMIT, S.UNKNOWN]
    finally:
        release.set()
    latest = order.events.order_by("-id").first()
    assert (latest.reason, latest.source) == ("The broker did not answer within 0.5s.", "rest")
    unknown = AuditEntry.objects.get(event="order.unknown")
    assert (unknown.actor_label, unknown.target_id) == ("bot", str(order.pk))
    # It reached the gateway late after all: the broker's reports settle it, and it is never sent twice.
    wait_for(lambda: _statuses(order)[-1] == S.FILLED, message="the broker's reports")
    assert [o.order_ref for o in quiet_market.received_orders()] == ["unk-1"]


# -- what an order's record keeps ---------------------------------------------------------------------
def test_an_order_keeps_the_contract_terms_and_checks_it_was_placed_with(ib_runtime, sim_gateway):
    from brokers.adapter import ContractSpec
    from marketdata.services import contract_resolve

    sim_gateway.pause_market()
    option = contract_resolve(spec=ContractSpec(symbol="AAPL", sec_type="OPT"))[0]
    price = sim_gateway.quote(option.con_id)["last"]
    limit = (price * Decimal("0.99")).quantize(Decimal("0.01"))
    agent = Actor(kind=ActorKind.MCP, label="a" * 151, source=Source.MCP, correlation_id="cid-7")
    request = _request(
        "keep-1",
        sec_type="OPT",
        con_id=option.con_id,
        quantity=Decimal(2),
        order_type="LMT",
        limit_price=limit,
        tif="GTC",
        outside_rth=True,
    )
    order = services.order_submit(request=request, actor=agent).order  # orders disabled: recorded only
    row = Order.objects.get(pk=order.pk)
    assert (row.symbol, row.sec_type, row.exchange, row.primary_exchange, row.currency, row.con_id) == (
        "AAPL",
        "OPT",
        "SMART",
        "",
        "USD",
        option.con_id,
    )
    assert (row.expiry, row.strike, row.right, row.multiplier, row.local_symbol) == (
        option.expiry,
        option.strike,
        option.right,
        "100",
        option.local_symbol,
    )
    assert (row.action, row.quantity, row.order_type, row.limit_price, row.stop_price) == ("BUY", 2, "LMT", limit, None)
    assert (row.trail_amount, row.trail_percent, row.tif, row.outside_rth, row.trading_mode) == (
        None,
        None,
        "GTC",
        True,
        "paper",
    )
    assert (row.account, row.client_order_id, row.request_hash) == (
        "DU1234567",
        "keep-1",
        services.request_hash(replace(request, account="DU1234567")),
    )
    assert (row.actor_kind, row.actor_label, row.source, row.correlation_id) == ("mcp", "a" * 150, "mcp", "cid-7")
    assert (row.parent, row.role, row.oca_group) == (None, "", "")
    assert Decimal(row.preview["reference_price"]) == price
    assert Decimal(row.preview["notional"]) == (limit * 200).quantize(Decimal("0.01"))
    assert row.preview["quote_time"].endswith("Z")  # UTC, written as every other time
    (event,) = row.events.all()
    assert (event.status, event.source, event.remaining_quantity, event.reason) == (
        S.SIMULATED,
        "mcp",
        2,
        "ORDERS_ENABLED=false: recorded, not sent",
    )
    entry = AuditEntry.objects.get(target_id=str(row.pk))
    assert (entry.event, entry.actor_label, entry.target_type) == ("order.simulated", "a" * 150, "order")
    assert entry.data == {
        "client_order_id": "keep-1",
        "account": "DU1234567",
        "status": S.SIMULATED,
        "request": replace(request, account="DU1234567").canonical(),
        "con_id": option.con_id,
    }
    assert sim_gateway.received_orders() == []


def test_an_armed_order_is_recorded_as_submitted_with_its_trail(ib_runtime, quiet_market, orders_enabled):
    from tests.conftest import wait_for

    by_amount = services.order_submit(
        request=_request("trail-1", action="SELL", order_type="TRAIL", trail_amount=Decimal("2.50")), actor=BOT
    ).order
    wait_for(lambda: S.SUBMITTED in _statuses(by_amount), message="acknowledged")
    row = Order.objects.get(pk=by_amount.pk)
    assert (row.order_type, row.trail_amount, row.trail_percent) == ("TRAIL", Decimal("2.5"), None)
    assert (row.symbol, row.primary_exchange) == ("AAPL", "NASDAQ")
    first = row.events.order_by("id").first()
    assert (first.status, first.reason) == (S.PENDING_SUBMIT, "")
    assert AuditEntry.objects.get(target_id=str(row.pk), event="order.submitted").data["status"] == S.PENDING_SUBMIT
    orders_enabled.ORDERS_ENABLED = False
    by_percent = services.order_submit(
        request=_request("trail-2", action="SELL", order_type="TRAIL", trail_percent=Decimal("1.5")), actor=BOT
    ).order
    row = Order.objects.get(pk=by_percent.pk)
    assert (row.trail_amount, row.trail_percent) == (None, Decimal("1.5"))


# -- modify at the broker -------------------------------------------------------------------------------
def test_a_modify_reaches_the_broker_as_a_change_of_the_same_order(ib_runtime, quiet_market, orders_enabled):
    from tests.conftest import wait_for

    order = _resting("mod-2")
    broker_id = order.events.filter(status=S.SUBMITTED).first().broker_order_id
    services.order_modify(order_id=order.pk, actor=OPERATOR, quantity=Decimal(5), limit_price=Decimal("186.00"))
    wait_for(lambda: len(quiet_market.received_orders()) == 2, message="the change at the gateway")
    change = quiet_market.received_orders()[-1]
    assert (change.order_id, change.total_quantity, change.lmt_price) == (broker_id, 5, Decimal("186.00"))
    wait_for(
        lambda: [(o.total_quantity, o.status) for o in quiet_market.orders()] == [(5, "Submitted")],
        message="one working order, changed",
    )
    modified = order.events.exclude(data={}).get(data__has_key="modified")
    assert (modified.status, modified.source, modified.remaining_quantity) == (S.SUBMITTED, "admin", 5)
    assert modified.data == {"modified": {"quantity": "5", "limit_price": "186", "stop_price": None}}
    entry = AuditEntry.objects.get(event="order.modified")
    assert (entry.actor_label, entry.target_id) == ("operator", str(order.pk))
    assert services.order_terms(order) == {"quantity": 5, "limit_price": Decimal("186.00"), "stop_price": None}


@pytest.mark.parametrize(("quantity", "remaining"), [(8, 4), (4, 0)], ids=["more-to-go", "down-to-the-filled"])
def test_a_modify_of_a_partly_filled_order_leaves_the_rest_working(
    ib_runtime, quiet_market, orders_enabled, quantity, remaining
):
    order = OrderEventFactory(
        status=S.PARTIALLY_FILLED, broker_order_id=77, filled_quantity=Decimal(4), remaining_quantity=Decimal(6)
    ).order
    # The gateway never saw this order and will report it as new: hold its reports until the change is recorded.
    with _recorder_stalled(ib_runtime):
        services.order_modify(order_id=order.pk, actor=OPERATOR, quantity=Decimal(quantity))
    modified = order.events.get(data__has_key="modified")
    assert (modified.status, modified.filled_quantity, modified.remaining_quantity) == (
        S.PARTIALLY_FILLED,
        4,
        remaining,
    )
    wait_for(lambda: [o.total_quantity for o in quiet_market.received_orders()] == [quantity], message="the change")


def test_a_modify_while_halted_is_refused_before_it_is_sent(ib_runtime, quiet_market, orders_enabled):
    order = OrderEventFactory(status=S.SUBMITTED, broker_order_id=77).order
    services.trading_halt(actor=OPERATOR, reason="incident")
    sent = len(quiet_market.received_orders())
    with pytest.raises(GatewayError) as excinfo:
        services.order_modify(order_id=order.pk, actor=OPERATOR, limit_price=Decimal("186.00"))
    assert excinfo.value.code == ErrorCode.TRADING_HALTED
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert (blocked.actor_label, blocked.data["account"], blocked.data["code"]) == (
        "operator",
        order.account,
        "trading_halted",
    )
    assert len(quiet_market.received_orders()) == sent
    assert not order.events.filter(data__has_key="modified").exists()


def test_a_modify_whose_order_fills_on_the_way_keeps_the_fill_and_audits_the_request(
    ib_runtime, quiet_market, orders_enabled, monkeypatch
):
    from brokers import runtime

    order = _resting("mod-5")
    adapter_type = type(runtime.adapter())
    send = adapter_type.order_place

    def send_then_filled(self, *, request):
        ack = send(self, request=request)
        # The broker's report that the order filled is written while the change is on its way back.
        OrderEventFactory(order=order, status=S.FILLED, filled_quantity=Decimal(3), remaining_quantity=Decimal(0))
        return ack

    with _recorder_stalled(ib_runtime):  # the gateway's own reports wait until the modify is recorded
        monkeypatch.setattr(adapter_type, "order_place", send_then_filled)
        services.order_modify(order_id=order.pk, actor=OPERATOR, limit_price=Decimal("186.00"))
        monkeypatch.undo()
    latest = order.events.order_by("-id").first()
    assert (latest.status, latest.filled_quantity, latest.remaining_quantity) == (S.FILLED, 3, 0)
    assert not order.events.filter(data__has_key="modified").exists()
    audited = AuditEntry.objects.get(event="order.modified")
    assert (audited.actor_label, audited.target_type, audited.target_id) == ("operator", "order", str(order.pk))
    assert audited.data["status"] == "filled"
    assert Decimal(audited.data["modified"]["limit_price"]) == Decimal("186.00")


def test_a_fill_arriving_while_a_modify_waits_its_turn_is_respected(ib_runtime, quiet_market, orders_enabled):
    from orders.pipeline import pipeline
    from tests.conftest import wait_for

    order = _resting("mod-4")
    running, hold, outcome = threading.Event(), threading.Event(), []
    threading.Thread(target=lambda: pipeline().run(lambda: (running.set(), hold.wait(30)))).start()
    wait_for(running.is_set, message="the pipeline is busy")
    # Behind the busy command: a partial fill of 2, then a modify down to 1 that passed its first check.
    threading.Thread(
        target=lambda: pipeline().run(
            lambda: OrderEventFactory(
                order=order, status=S.PARTIALLY_FILLED, filled_quantity=Decimal(2), remaining_quantity=Decimal(1)
            )
        )
    ).start()
    wait_for(lambda: pipeline_queued() == 1, message="the fill queued")

    def modify():
        try:
            services.order_modify(order_id=order.pk, actor=OPERATOR, quantity=Decimal(1))
        except GatewayError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=modify)
    worker.start()
    wait_for(lambda: pipeline_queued() == 2, message="the modify queued")
    hold.set()
    worker.join(30)
    (exc,) = outcome
    assert (exc.code, exc.details, exc.message) == (
        ErrorCode.INVALID_ORDER,
        {"gate": "validation", "field": "quantity"},
        "quantity cannot go below the filled quantity.",
    )
    assert AuditEntry.objects.get(event="gate.blocked").data["account"] == order.account
    assert not order.events.filter(data__has_key="modified").exists()


def test_a_modify_is_checked_against_the_contract_s_minimum_tick(ib_runtime, quiet_market):
    order = OrderEventFactory(status=S.SUBMITTED, broker_order_id=77).order
    with pytest.raises(GatewayError) as excinfo:
        services.order_modify(order_id=order.pk, actor=OPERATOR, limit_price=Decimal("189.005"))
    assert excinfo.value.code == ErrorCode.INVALID_TICK_SIZE


# -- an order sent but not yet acknowledged -------------------------------------------------------------
def test_an_order_sent_but_not_yet_acknowledged_is_cancelled_by_the_id_it_was_sent_with(ib_runtime, quiet_market):
    from orders.pipeline import pipeline

    order = OrderEventFactory(status=S.PENDING_SUBMIT).order
    pipeline().sent_ids[order.pk] = (78, 1)  # sent by this process; the recorder has not written it yet
    assert services.order_client_id(order) == 1
    services.order_cancel(order_id=order.pk, actor=OPERATOR)
    assert _cancels(quiet_market, 1) == [78]
    other = OrderEventFactory(status=S.PENDING_SUBMIT).order
    pipeline().sent_ids[other.pk] = (79, 5)  # through another IB client id: only that connection may cancel it
    with pytest.raises(GatewayError) as excinfo:
        services.order_cancel(order_id=other.pk, actor=OPERATOR)
    assert (excinfo.value.code, excinfo.value.details) == (ErrorCode.ORDER_STATE_CONFLICT, {"client_id": 5})
    assert excinfo.value.message == (
        "This order was placed through IB client id 5; this process is client id 1. Change it from that "
        "process, or halt trading to cancel everything."
    )
    assert _cancels(quiet_market, 1) == [78]


def test_the_buying_power_check_follows_the_account_once_an_order_fills(ib_runtime, quiet_market, settings):
    from brokers import runtime

    settings.RISK_MAX_ORDER_QUANTITY = Decimal(10**9)
    settings.RISK_MAX_ORDER_NOTIONAL = Decimal(10**12)
    settings.ORDERS_ENABLED = True
    account = runtime.adapter().managed_accounts()[0]
    funds = runtime.adapter().account_risk(account=account).available_funds
    assert _codes(services.order_preview(request=_request("", quantity=Decimal(6000)), actor=BOT)) == []
    services.order_submit(request=_request("bp-fill", quantity=Decimal(5000)), actor=BOT)

    # Read again for every order, the funds follow what IB streams once the fills are in.
    def bought() -> Decimal:
        return dict(runtime.adapter().account_risk(account=account).positions).get(265598, Decimal(0))

    wait_for(lambda: bought() == 5000, message="all 5000 bought")
    assert runtime.adapter().account_risk(account=account).available_funds < funds
    assert _codes(services.order_preview(request=_request("", quantity=Decimal(6000)), actor=BOT)) == [
        "risk_buying_power"
    ]


def test_a_preview_reports_the_broker_s_margin_where_it_exceeds_the_estimate(ib_runtime, quiet_market, settings):
    from brokers.adapter import ContractSpec
    from marketdata.services import contract_resolve

    settings.RISK_MAX_ORDER_NOTIONAL = Decimal(10**8)
    option = contract_resolve(spec=ContractSpec(symbol="AAPL", sec_type="OPT"))[0]
    # Writing options: the estimate charges the premium (100%), the broker 120% of it. An order that
    # fits the account's funds by the estimate does not by the broker's what-if.
    contracts = int(Decimal(1_000_000) / (quiet_market.quote(option.con_id)["last"] * 100)) - 1
    request = _request("", sec_type="OPT", con_id=option.con_id, action="SELL", quantity=Decimal(contracts))
    result = services.order_preview(request=request, actor=BOT)
    assert _codes(result) == ["risk_buying_power"]
    assert result.blocks[0]["message"] == "The order's initial margin would exceed the account's equity with loan."
    assert result.blocks[0]["details"] == {
        "init_margin_after": str(result.preview.init_margin_after),
        "equity_with_loan_after": str(result.preview.equity_with_loan_after),
    }
    assert result.would_be == "refused"


# -- placements admitted together ------------------------------------------------------------------------
def _queued_placements() -> int:
    """Placements waiting in the pipeline (other commands, e.g. the housekeeping chores, not counted)."""
    from orders.pipeline import pipeline

    waiting = pipeline()._queue
    with waiting.mutex:
        return sum(1 for command in waiting.queue if command is not None and command.admit is not None)


def _admitted_together(requests: list[OrderRequest]) -> list:
    """Place each request from its own thread while the pipeline is busy, so all are admitted in one
    commit, in this order. Each result is the SubmitResult or the GatewayError."""
    from orders.pipeline import pipeline
    from tests.conftest import wait_for

    running, hold = threading.Event(), threading.Event()
    results: list = [None] * len(requests)
    threading.Thread(target=lambda: pipeline().run(lambda: (running.set(), hold.wait(30)))).start()
    wait_for(running.is_set, message="the pipeline is busy")

    def place(i: int) -> None:
        try:
            results[i] = services.order_submit(request=requests[i], actor=BOT)
        except GatewayError as exc:
            results[i] = exc

    threads = [threading.Thread(target=place, args=(i,)) for i in range(len(requests))]
    try:
        for i, thread in enumerate(threads):
            thread.start()
            wait_for(lambda i=i: _queued_placements() == i + 1, message=f"placement {i} queued")
    finally:
        hold.set()
    for thread in threads:
        thread.join(30)
    return results


def test_placements_admitted_together_count_each_other_and_share_a_key(ib_runtime, quiet_market, settings):
    settings.RISK_MAX_ORDERS_PER_MINUTE = 2
    first, again, second, third = _admitted_together(
        [_request("g-1"), _request("g-1", quantity=Decimal("3.0")), _request("g-2"), _request("g-3")]
    )
    assert (first.replayed, again.replayed, again.order.pk) == (False, True, first.order.pk)
    assert second.replayed is False
    assert (third.code, third.http_status) == (ErrorCode.RISK_RATE_LIMIT, 429)
    assert sorted(Order.objects.values_list("client_order_id", flat=True)) == ["g-1", "g-2"]
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert (blocked.target_id, blocked.data["code"], blocked.data["account"]) == ("g-3", "risk_rate_limit", "DU1234567")


def test_identical_placements_admitted_together_are_duplicates_of_the_first(ib_runtime, quiet_market, settings):
    settings.RISK_DUPLICATE_WINDOW_S = 10
    first, second, third = _admitted_together([_request("") for _ in range(3)])
    assert first.replayed is False
    assert [second.code, third.code] == [ErrorCode.POSSIBLE_DUPLICATE] * 2
    assert Order.objects.count() == 1


def _placed_in_two_commits(first_request: OrderRequest, second_request: OrderRequest) -> tuple:
    """Both placements pass their own checks while the pipeline is busy; a command queued between them
    makes the pipeline admit them in two commits. The results (SubmitResult or GatewayError), in order."""
    from orders.pipeline import pipeline
    from tests.conftest import wait_for

    running, hold = threading.Event(), threading.Event()
    results: dict = {}

    def place(name: str, request: OrderRequest) -> None:
        try:
            results[name] = services.order_submit(request=request, actor=BOT)
        except GatewayError as exc:
            results[name] = exc

    first = threading.Thread(target=place, args=("first", first_request))
    between = threading.Thread(target=lambda: pipeline().run(lambda: None))
    second = threading.Thread(target=place, args=("second", second_request))
    threading.Thread(target=lambda: pipeline().run(lambda: (running.set(), hold.wait(30)))).start()
    try:
        wait_for(running.is_set, message="the pipeline is busy")
        first.start()
        wait_for(lambda: _queued_placements() == 1, message="the first placement queued")
        between.start()
        wait_for(lambda: pipeline_queued() == 2, message="a command after it")
        second.start()
        wait_for(lambda: _queued_placements() == 2, message="the second placement queued")
    finally:
        hold.set()
    for thread in (first, between, second):
        thread.join(30)
    return results["first"], results["second"]


def test_a_key_committed_by_an_earlier_commit_while_a_placement_waited_is_replayed(ib_runtime, quiet_market):
    first, second = _placed_in_two_commits(_request("k-1"), _request("k-1"))
    assert (first.replayed, second.replayed) == (False, True)
    assert second.order.pk == first.order.pk
    assert Order.objects.count() == 1
    assert not AuditEntry.objects.filter(event="gate.blocked").exists()


def test_a_key_committed_by_an_earlier_commit_for_another_order_is_refused_and_audited(ib_runtime, quiet_market):
    first, reused = _placed_in_two_commits(_request("k-2"), _request("k-2", quantity=Decimal(4)))
    assert first.replayed is False
    assert (reused.code, reused.http_status, reused.details["order_id"]) == (
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        422,
        str(first.order.pk),
    )
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert (blocked.target_id, blocked.data["code"], blocked.data["account"]) == (
        "k-2",
        "idempotency_key_reused",
        "DU1234567",
    )
    assert Order.objects.count() == 1


def test_a_key_reused_within_one_commit_is_refused(ib_runtime, quiet_market):
    first, reused = _admitted_together([_request("g-4"), _request("g-4", quantity=Decimal(4))])
    assert first.replayed is False
    assert (reused.code, reused.details["order_id"]) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, str(first.order.pk))


def test_every_leg_of_a_bracket_counts_against_the_rate_limit(ib_runtime, quiet_market, settings):
    settings.RISK_MAX_ORDERS_PER_MINUTE = 3
    services.order_submit(request=_request("r-1"), actor=BOT)
    bracket = _request(
        "r-2",
        order_type="LMT",
        limit_price=Decimal("189.00"),
        take_profit=Decimal("192.00"),
        stop_loss=Decimal("187.00"),
    )
    with pytest.raises(GatewayError) as excinfo:
        services.order_submit(request=bracket, actor=BOT)
    assert excinfo.value.code == ErrorCode.RISK_RATE_LIMIT
    settings.RISK_MAX_ORDERS_PER_MINUTE = 4
    entry = services.order_submit(request=bracket, actor=BOT).order
    assert sorted(entry.children.values_list("role", flat=True)) == ["stop_loss", "take_profit"]
    with pytest.raises(GatewayError) as excinfo:
        services.order_submit(request=_request("r-3"), actor=BOT)
    assert excinfo.value.code == ErrorCode.RISK_RATE_LIMIT  # the bracket's three legs filled the minute


# -- sends that fail -------------------------------------------------------------------------------------
def test_a_send_that_finds_the_broker_gone_is_rejected_and_says_so(ib_runtime, quiet_market, orders_enabled):
    from orders.pipeline import pipeline
    from tests.conftest import wait_for

    running, hold, outcome = threading.Event(), threading.Event(), []
    threading.Thread(target=lambda: pipeline().run(lambda: (running.set(), hold.wait(30)))).start()
    wait_for(running.is_set, message="the pipeline is busy")

    def place() -> None:
        try:
            services.order_submit(request=_request("gone-1"), actor=BOT)
        except GatewayError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=place)
    worker.start()
    wait_for(lambda: pipeline_queued() == 1, message="checked and queued")
    quiet_market.faults.refuse_connections(60)
    quiet_market.faults.drop_all_connections()
    wait_for(lambda: ib_runtime.worker.state != "connected", message="disconnected")
    hold.set()
    worker.join(30)
    (exc,) = outcome
    assert (exc.code, exc.http_status) == (ErrorCode.BROKER_UNAVAILABLE, 503)
    order = Order.objects.get(client_order_id="gone-1")
    assert _statuses(order) == [S.PENDING_SUBMIT, S.REJECTED]
    latest = order.events.order_by("-id").first()
    assert (latest.reason, latest.code, latest.source) == (exc.message, "broker_unavailable", "rest")
    assert AuditEntry.objects.get(event="order.rejected").actor_label == "bot"
    assert quiet_market.received_orders() == []


def test_an_order_on_a_held_stream_that_went_quiet_is_checked_on_a_snapshot(ib_runtime, quiet_market, settings):
    from brokers import runtime
    from orders import gates

    services.order_submit(request=_request("quiet-1"), actor=BOT)  # its quote stream stays held
    con_id = quiet_market.con_id("AAPL")
    settings.QUOTE_STALE_AFTER_S = 1
    wait_for(
        lambda: not gates.quote_is_fresh(runtime.adapter().quote_cached(con_id=con_id)),
        message="the held stream gone quiet (the market is paused)",
    )
    second = services.order_submit(request=_request("quiet-2"), actor=BOT).order
    assert _statuses(second) == [S.SIMULATED]
    assert second.preview["reference_price"] is not None  # checked against the snapshot


def test_a_placed_order_is_answered_with_the_brokers_acknowledgement(ib_runtime, quiet_market, settings):
    settings.ORDERS_ENABLED = True
    order = services.order_submit(request=_request("ack-1", order_type="LMT", limit_price=Decimal("185.00")), actor=BOT)
    (placed,) = [o for o in quiet_market.received_orders() if not o.what_if]
    latest = order.order.events.order_by("-id").first()
    assert (latest.status, latest.broker_order_id) == (S.SUBMITTED, placed.order_id)


def test_the_ledger_records_an_order_sent_before_the_fill_the_broker_reports_for_it(
    ib_runtime, quiet_market, settings, monkeypatch
):
    # The sending thread resumes late (a busy machine): by then the broker has acknowledged and filled the
    # order and the recorder has written the fill. The ledger still tells it in the order it happened.
    from audit.models import AuditEntry
    from brokers import runtime
    from orders.models import Fill
    from tests.conftest import wait_for

    services.order_submit(request=_request("warm-4"), actor=BOT)  # the contract cached, the quote streamed
    settings.ORDERS_ENABLED = True
    adapter_type = type(runtime.adapter())
    place = adapter_type.order_place

    def place_then_stall(self, **kwargs):
        ack = place(self, **kwargs)
        wait_for(
            lambda: Fill.objects.filter(order__client_order_id=kwargs["request"].order_ref).exists(),
            message="the broker's fill recorded while the sender stalls",
        )
        return ack

    monkeypatch.setattr(adapter_type, "order_place", place_then_stall)
    order = services.order_submit(request=_request("late-1"), actor=BOT).order
    statuses = _statuses(order)
    # (A second `submitted` may follow the first: it records IB's permanent id, reported after the acknowledgement.)
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == [
        S.PENDING_SUBMIT,
        S.SUBMITTED,
        S.FILLED,
    ]
    (fill,) = Fill.objects.filter(order=order)
    story = [
        entry.event for entry in AuditEntry.objects.filter(target_id__in=[str(order.pk), fill.exec_id]).order_by("seq")
    ]
    assert story[:2] == ["order.submitted", "order.sent"]
    assert story.index("order.sent") < story.index("fill.recorded")


def test_an_order_can_be_cancelled_before_its_acknowledgement_is_recorded(ib_runtime, quiet_market, settings):
    # The recorder is busy (a burst of fills, a slow disk): the order is at the broker, the ledger does not
    # show it yet. A cancel must still reach the broker, with the order id the send got back.
    settings.ORDERS_ENABLED = True
    with _recorder_stalled(ib_runtime):
        order = services.order_submit(
            request=_request("early-1", order_type="LMT", limit_price=Decimal("185.00")), actor=BOT
        ).order
        assert _statuses(order) == [S.PENDING_SUBMIT]
        (placed,) = [o for o in quiet_market.received_orders() if not o.what_if]
        services.order_cancel(order_id=order.pk, actor=BOT)
        assert _cancels(quiet_market, 1) == [placed.order_id]
    wait_for(lambda: _statuses(order)[-1] == S.CANCELLED, message="the broker's cancel recorded")
    assert quiet_market.orders()[0].status == "Cancelled"


def test_an_acknowledgement_the_ib_thread_could_not_queue_is_still_recorded(
    ib_runtime, quiet_market, settings, monkeypatch, caplog
):
    # Queuing the acknowledgement from the IB thread failed (a bug, memory): the order is at the broker, so the
    # send must neither fail nor be recorded `unknown`; the acknowledgement is queued once the send returns.
    from orders.services import sending

    settings.ORDERS_ENABLED = True
    make = sending._order_sent
    calls = []

    def fails_first(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("could not build the acknowledgement")
        return make(*args)

    monkeypatch.setattr(sending, "_order_sent", fails_first)
    order = services.order_submit(
        request=_request("ack-2", order_type="LMT", limit_price=Decimal("185.00")), actor=BOT
    ).order
    (placed,) = [o for o in quiet_market.received_orders() if not o.what_if]
    latest = order.events.order_by("-id").first()
    assert (latest.status, latest.broker_order_id) == (S.SUBMITTED, placed.order_id)
    assert len(calls) == 2
    assert "acknowledgement callback failed" in caplog.text


def test_a_send_that_fails_unexpectedly_is_recorded_unknown_and_never_resent(
    ib_runtime, quiet_market, settings, monkeypatch
):
    # A failure the pipeline has no name for (a client library's internal error, say): the order may or
    # may not have left, so it is `unknown` for reconciliation, under the actor who placed it.
    from brokers import runtime

    services.order_submit(request=_request("warm-3"), actor=BOT)
    settings.ORDERS_ENABLED = True

    def broken(self, *, request, on_ack=None):
        raise RuntimeError("decoder lost its place")

    monkeypatch.setattr(type(runtime.adapter()), "order_place", broken)
    order = services.order_submit(request=_request("odd-1"), actor=BOT).order
    assert _statuses(order) == [S.PENDING_SUBMIT, S.UNKNOWN]
    latest = order.events.order_by("-id").first()
    assert (latest.reason, latest.source) == ("decoder lost its place", "rest")
    unknown = AuditEntry.objects.get(event="order.unknown")
    assert (unknown.actor_label, unknown.target_id) == ("bot", str(order.pk))
    assert [o.order_ref for o in quiet_market.received_orders() if not o.what_if] == []


def test_a_bracket_whose_entry_send_is_unknown_sends_none_of_its_exits(ib_runtime, quiet_market, settings):
    from brokers import runtime
    from tests.conftest import wait_for

    services.order_submit(request=_request("warm-2"), actor=BOT)  # caches the contract, streams the quote
    wait_for(lambda: runtime.adapter().quote_cached(con_id=quiet_market.con_id("AAPL")), message="streamed quote")
    settings.ORDERS_ENABLED = True
    ib_runtime.worker.request_timeout = 0.5
    release = threading.Event()
    ib_runtime.worker.run_soon(lambda ib: release.wait(30))
    bracket = _request(
        "br-u",
        order_type="LMT",
        limit_price=Decimal("189.00"),
        take_profit=Decimal("192.00"),
        stop_loss=Decimal("187.00"),
    )
    try:
        entry = services.order_submit(request=bracket, actor=BOT).order
        assert _statuses(entry) == [S.PENDING_SUBMIT, S.UNKNOWN]
    finally:
        ib_runtime.worker.request_timeout = 10  # the broker's orders are checked below
        release.set()
    for child in entry.children.all():
        assert _statuses(child) == [S.PENDING_SUBMIT, S.REJECTED]
        rejection = child.events.order_by("-id").first()
        assert (rejection.reason, rejection.code, rejection.source) == (NOT_SENT, "bracket_incomplete", "rest")
        assert AuditEntry.objects.get(event="order.rejected", target_id=str(child.pk)).actor_label == "bot"
    wait_for(lambda: quiet_market.received_orders(), message="the late entry")
    assert [o.order_ref for o in quiet_market.received_orders()] == ["br-u"]
    # The broker holds the late entry untransmitted, for good: a check of its orders finds it, and it is
    # cancelled there.
    wait_for(
        lambda: [o.status for o in quiet_market.orders() if o.order_ref == "br-u"] == ["Cancelled"],
        timeout=15,
        message="the late entry cancelled at the broker",
    )
    wait_for(lambda: _statuses(entry)[-1] == S.CANCELLED, message="the late entry cancelled in the ledger")
    assert entry.events.order_by("-id").first().code == "bracket_incomplete"


def test_a_bracket_is_sent_leg_by_leg_under_its_actor(ib_runtime, quiet_market, orders_enabled):
    bracket = _request(
        "br-s",
        order_type="LMT",
        limit_price=Decimal("189.00"),
        take_profit=Decimal("192.00"),
        stop_loss=Decimal("187.00"),
    )
    entry = services.order_submit(request=bracket, actor=BOT).order
    legs = [entry, *entry.children.order_by("role")]
    assert [o.client_order_id for o in legs] == ["br-s", "br-s.sl", "br-s.tp"]
    from tests.conftest import wait_for

    for leg in legs:
        sent = wait_for(lambda leg=leg: AuditEntry.objects.filter(event="order.sent", target_id=str(leg.pk)).first())
        assert sent.actor_label == "bot"
    wait_for(
        lambda: {o.order_ref for o in quiet_market.received_orders()} == {"br-s", "br-s.sl", "br-s.tp"},
        message="three legs at the gateway",
    )


def test_a_key_committed_elsewhere_while_a_placement_waits_is_replayed(ib_runtime, quiet_market):
    from orders.pipeline import pipeline
    from tests.conftest import wait_for

    running, hold, outcome = threading.Event(), threading.Event(), []
    threading.Thread(target=lambda: pipeline().run(lambda: (running.set(), hold.wait(30)))).start()
    wait_for(running.is_set, message="the pipeline is busy")
    request = _request("elsewhere-1")
    worker = threading.Thread(target=lambda: outcome.append(services.order_submit(request=request, actor=BOT)))
    worker.start()
    wait_for(lambda: pipeline_queued() == 1, message="checked and queued")
    # Another process records the same key and terms before this placement is admitted.
    keyed = replace(request, account="DU1234567")
    other = OrderEventFactory(
        order__client_order_id="elsewhere-1", order__request_hash=services.request_hash(keyed)
    ).order
    hold.set()
    worker.join(30)
    (result,) = outcome
    assert (result.order.pk, result.replayed) == (other.pk, True)
    assert Order.objects.count() == 1
