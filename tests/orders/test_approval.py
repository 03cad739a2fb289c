"""Orders from chosen actors wait for an operator: held, approved, rejected, expired."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import GatewayError
from orders import services
from orders.models import OrderEvent
from orders.types import OrderRequest
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = Actor(kind=ActorKind.MCP, label="mcp:test", source=Source.MCP)
OPERATOR = Actor(kind=ActorKind.USER, label="operator", source=Source.ADMIN, is_admin=True)


@pytest.fixture
def approval_for_agents(settings, orders_enabled):
    settings.APPROVAL_REQUIRED_FOR = frozenset({"mcp"})
    return settings


def _agent_order(cid: str):
    from decimal import Decimal

    request = OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(3), order_type="MKT", client_order_id=cid)
    return services.order_submit(request=request, actor=AGENT).order


def _statuses(order):
    return list(OrderEvent.objects.filter(order=order).order_by("id").values_list("status", flat=True))


def _sent(sim_gateway):
    return [o.order_ref for o in sim_gateway.received_orders() if not o.what_if]


def test_agent_order_is_held_and_nothing_is_sent(ib_runtime, sim_gateway, approval_for_agents):
    order = _agent_order("hold-1")
    assert _statuses(order) == ["pending_approval"]
    assert _sent(sim_gateway) == []


def test_api_key_orders_are_not_held_when_only_agents_need_approval(ib_runtime, api_client, approval_for_agents):
    body = {"client_order_id": "k-1", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}
    assert api_client.post("/api/v1/orders/", body, format="json").json()["status"] != "pending_approval"


def test_approved_order_is_sent_and_fills(ib_runtime, sim_gateway, approval_for_agents):
    sim_gateway.pause_market()
    order = _agent_order("hold-2")
    services.order_approve(order_id=order.pk, actor=OPERATOR)
    # Approve waits for the acknowledgement a bounded time (2 s): on a loaded machine the broker may see the
    # order a moment after it returns. Exactly this order, once.
    wait_for(lambda: _sent(sim_gateway) == ["hold-2"], message="the approved order at the broker")
    # Sent under the operator who approved it.
    sent = wait_for(lambda: AuditEntry.objects.filter(event="order.sent", target_id=str(order.pk)).first())
    assert (sent.actor_label, sent.data["broker_order_id"]) == ("operator", sim_gateway.received_orders()[0].order_id)
    wait_for(lambda: _statuses(order)[-1] == "filled", message="approved order filled")
    assert AuditEntry.objects.filter(event="order.approved", actor_label="operator").count() == 1


def test_rejected_order_is_never_sent(ib_runtime, sim_gateway, approval_for_agents):
    order = _agent_order("hold-3")
    services.order_reject_approval(order_id=order.pk, actor=OPERATOR, reason="not today")
    assert _statuses(order) == ["pending_approval", "rejected"]
    assert _sent(sim_gateway) == []
    with pytest.raises(GatewayError) as exc:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert exc.value.code == "order_state_conflict"


def test_unapproved_order_expires(ib_runtime, sim_gateway, approval_for_agents):
    order = _agent_order("hold-4")
    approval_for_agents.APPROVAL_TTL_S = 5
    # Pretend the hold started long ago: expiry compares against the event time.
    later = timezone.now() + timedelta(seconds=10)
    from unittest import mock

    with mock.patch("django.utils.timezone.now", return_value=later):
        assert services.orders_expire_pending() == 1
        with pytest.raises(GatewayError):
            services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert _statuses(order) == ["pending_approval", "expired"]
    assert _sent(sim_gateway) == []
    assert AuditEntry.objects.filter(event="order.expired").count() == 1


def test_an_agent_cannot_approve(ib_runtime, approval_for_agents):
    order = _agent_order("hold-5")
    with pytest.raises(GatewayError) as exc:
        services.order_approve(order_id=order.pk, actor=AGENT)
    assert exc.value.code == "permission_denied"


def test_approval_reruns_the_kill_switch(ib_runtime, sim_gateway, approval_for_agents):
    order = _agent_order("hold-6")
    services.trading_halt(actor=OPERATOR, reason="incident")
    with pytest.raises(GatewayError) as exc:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert exc.value.code == "trading_halted"
    assert _sent(sim_gateway) == []


@pytest.fixture
def recorded_two_minutes_ago(monkeypatch):
    """Rows recorded inside this block get times two minutes back, as if recorded then (inserted so: nothing
    about the append-only ledger is changed)."""
    from contextlib import contextmanager

    from orders.models import Order

    @contextmanager
    def block():
        earlier = timezone.now() - timedelta(minutes=2)
        with monkeypatch.context() as m:
            # What a field's default makes (Django keeps it as `_get_default`).
            m.setattr(Order._meta.get_field("created_at"), "_get_default", lambda: earlier)
            m.setattr(OrderEvent._meta.get_field("at"), "_get_default", lambda: earlier)
            yield

    return block


def test_approvals_count_against_the_orders_per_minute_limit(
    ib_runtime, sim_gateway, approval_for_agents, recorded_two_minutes_ago, settings
):
    """Held orders recorded before the last minute go out when approved, so they count then: with a limit of 3,
    two new orders leave room for one approval, not for all three (the admin's bulk approve included)."""
    from decimal import Decimal

    sim_gateway.pause_market()
    settings.RISK_MAX_ORDERS_PER_MINUTE, settings.APPROVAL_TTL_S = 3, 600
    with recorded_two_minutes_ago():
        held = [_agent_order(f"old-{i}") for i in range(3)]
    bot = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST)
    for i in range(2):
        request = OrderRequest(
            symbol="AAPL", action="BUY", quantity=Decimal(1), order_type="MKT", client_order_id=f"bot-{i}"
        )
        services.order_submit(request=request, actor=bot)
    services.order_approve(order_id=held[0].pk, actor=OPERATOR)
    for order in held[1:]:
        with pytest.raises(GatewayError) as refused:
            services.order_approve(order_id=order.pk, actor=OPERATOR)
        assert refused.value.code == "risk_rate_limit"
        assert _statuses(order) == ["pending_approval"]  # still held: approvable once the minute allows
    assert sorted(_sent(sim_gateway)) == ["bot-0", "bot-1", "old-0"]
    # A new order now finds the approval in its minute too.
    with pytest.raises(GatewayError) as refused:
        request = OrderRequest(
            symbol="AAPL", action="BUY", quantity=Decimal(1), order_type="MKT", client_order_id="bot-2"
        )
        services.order_submit(request=request, actor=bot)
    assert refused.value.code == "risk_rate_limit"


def test_approving_an_order_held_within_the_minute_does_not_count_it_twice(
    ib_runtime, sim_gateway, approval_for_agents, settings
):
    sim_gateway.pause_market()
    settings.RISK_MAX_ORDERS_PER_MINUTE = 2
    held = [_agent_order(f"new-{i}") for i in range(2)]
    for order in held:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert sorted(_sent(sim_gateway)) == ["new-0", "new-1"]


def test_approval_refuses_an_order_the_market_hours_refuse(ib_runtime, sim_gateway, approval_for_agents, monkeypatch):
    """Approved, a held order goes out now: a market order for the day is refused while the exchange is closed,
    as a new one would be, and stays held."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from orders.services import checks

    order = _agent_order("hours-1")
    approval_for_agents.TRADING_HOURS = "exchange"
    saturday = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    monkeypatch.setattr(checks, "timezone", SimpleNamespace(now=lambda: saturday))
    with pytest.raises(GatewayError) as refused:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert refused.value.code == "market_closed"
    assert _statuses(order) == ["pending_approval"] and _sent(sim_gateway) == []


def test_approval_checks_the_size_rules_the_broker_reports(ib_runtime, sim_gateway, approval_for_agents, monkeypatch):
    """A held order is checked again against the contract as the broker describes it now (tick, size steps),
    not as recorded on the order: one held while the rules were unknown is refused at approval as a new one."""
    from decimal import Decimal

    from orders import gates

    sim_gateway.pause_market()
    with monkeypatch.context() as m:  # the rules unknown when it was held (an older contract cache)
        m.setattr(gates, "gate_size_rules", lambda request, contract: None)
        request = OrderRequest(
            symbol="AAPL", action="BUY", quantity=Decimal("0.00001"), order_type="MKT", client_order_id="tiny"
        )
        order = services.order_submit(request=request, actor=AGENT).order
    assert _statuses(order) == ["pending_approval"]
    with pytest.raises(GatewayError) as refused:
        services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert (refused.value.code, refused.value.details["field"]) == ("invalid_order", "quantity")
    assert _statuses(order) == ["pending_approval"] and _sent(sim_gateway) == []


ALICE = Actor(kind=ActorKind.USER, label="alice", source=Source.REST)


def _user_order(cid: str, actor: Actor = ALICE):
    from decimal import Decimal

    request = OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(2), order_type="MKT", client_order_id=cid)
    return services.order_submit(request=request, actor=actor).order


@pytest.fixture
def approval_for_users(settings, orders_enabled):
    settings.APPROVAL_REQUIRED_FOR = frozenset({"user"})
    return settings


def test_a_user_cannot_approve_their_own_order(ib_runtime, sim_gateway, approval_for_users):
    order = _user_order("own-1")
    alice_at_console = Actor(kind=ActorKind.USER, label="alice", source=Source.ADMIN, is_admin=True)
    with pytest.raises(GatewayError) as excinfo:
        services.order_approve(order_id=order.pk, actor=alice_at_console)
    assert (excinfo.value.code, excinfo.value.http_status) == ("self_approval", 403)
    assert excinfo.value.details["placed_by"] == "alice"
    # Nothing sent, still waiting for someone else; the refusal is on record.
    assert _statuses(order) == ["pending_approval"]
    assert _sent(sim_gateway) == []
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert (blocked.actor_label, blocked.data["code"], blocked.data["gate"]) == ("alice", "self_approval", "approval")
    assert blocked.target_id == "own-1"
    # A second person approves it: sent.
    services.order_approve(order_id=order.pk, actor=OPERATOR)
    assert _sent(sim_gateway) == ["own-1"]


def test_a_user_may_reject_their_own_order(ib_runtime, sim_gateway, approval_for_users):
    order = _user_order("own-2")
    services.order_reject_approval(
        order_id=order.pk, actor=Actor(kind=ActorKind.USER, label="alice", source=Source.ADMIN)
    )
    assert _statuses(order) == ["pending_approval", "rejected"]
    assert _sent(sim_gateway) == []


def test_a_one_person_desk_approves_its_own_orders_with_four_eyes_off(ib_runtime, sim_gateway, approval_for_users):
    approval_for_users.APPROVAL_SECOND_PERSON = False
    order = _user_order("own-3")
    services.order_approve(order_id=order.pk, actor=Actor(kind=ActorKind.USER, label="alice", source=Source.ADMIN))
    assert _sent(sim_gateway) == ["own-3"]
    assert not AuditEntry.objects.filter(event="gate.blocked").exists()


def test_an_agent_order_is_approved_by_any_operator_under_four_eyes(ib_runtime, sim_gateway, approval_for_agents):
    # The rule is about people approving themselves: an operator whose user name happens to be the agent's
    # label is still another party.
    order = _agent_order("own-4")
    services.order_approve(order_id=order.pk, actor=Actor(kind=ActorKind.USER, label="mcp:test", source=Source.ADMIN))
    assert _sent(sim_gateway) == ["own-4"]
