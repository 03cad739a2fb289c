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
    assert _sent(sim_gateway) == ["hold-2"]
    # Sent under the operator who approved it; the acknowledgement is on record when approve returns.
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
