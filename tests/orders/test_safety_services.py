"""The order services' safety rules against the simulated gateway: who is held for approval, the gates
re-run on approve and modify, modify never below the filled quantity, idempotency on every field."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from audit.models import AuditEntry
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import ErrorCode, GatewayError
from orders import services
from orders.models import Order
from orders.models import OrderStatus as S
from orders.types import OrderRequest
from tests.factories import OrderEventFactory

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR = Actor(kind=ActorKind.USER, label="operator", source=Source.ADMIN, is_admin=True)


def _request(cid: str, **fields) -> OrderRequest:
    values = {"symbol": "AAPL", "action": "BUY", "quantity": Decimal(3), "order_type": "MKT", "client_order_id": cid}
    values.update(fields)
    return OrderRequest(**values)


def _sent(sim_gateway) -> list[str]:
    return [o.order_ref for o in sim_gateway.received_orders() if not o.what_if]


def _statuses(order) -> list[str]:
    return list(order.events.order_by("id").values_list("status", flat=True))


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
