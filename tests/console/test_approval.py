"""Held orders are decided in the admin: approve sends to the broker and fills, reject never sends."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from audit.models import AuditEntry
from ibkrgw.actors import Actor
from orders import services
from orders.models import OrderEvent
from orders.types import OrderRequest
from tests.conftest import wait_for
from tests.console.conftest import AGENT, resting_limit, sent_refs

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:orders_order_changelist")


def _agent_order(cid: str):
    request = OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(3), order_type="MKT", client_order_id=cid)
    return services.order_submit(request=request, actor=AGENT).order


def _statuses(order):
    return list(OrderEvent.objects.filter(order=order).order_by("id").values_list("status", flat=True))


def test_dashboard_lists_held_orders_with_approve_and_reject(ib_runtime, approval_for_agents, staff_client):
    order = _agent_order("held-list")
    body = staff_client.get(reverse("admin:ibkrgw_dashboard")).content.decode()
    assert "held-list" in body
    assert reverse("admin:ibkrgw_order_approve_review", args=[order.pk]) in body
    assert reverse("admin:ibkrgw_order_reject", args=[order.pk]) in body
    assert 'name="csrfmiddlewaretoken"' in body


def test_approve_from_the_dashboard_sends_and_fills(ib_runtime, sim_gateway, approval_for_agents, staff_client):
    sim_gateway.pause_market()
    order = _agent_order("held-approve")
    assert sent_refs(sim_gateway) == []
    # Without the confirmation box: back to the review page, nothing sent.
    unconfirmed = staff_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), follow=True)
    assert "Tick the confirmation box" in unconfirmed.content.decode()
    assert sent_refs(sim_gateway) == []
    response = staff_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"}, follow=True)
    assert "Order held-approve approved and sent." in response.content.decode()
    assert sent_refs(sim_gateway) == ["held-approve"]
    wait_for(lambda: _statuses(order)[-1] == "filled", message="approved order filled")
    entry = AuditEntry.objects.get(event="order.approved")
    assert (entry.actor_kind, entry.actor_label, entry.source) == ("user", "staff", "admin")


def test_reject_from_the_dashboard_never_sends(ib_runtime, sim_gateway, approval_for_agents, staff_client):
    order = _agent_order("held-reject")
    staff_client.post(reverse("admin:ibkrgw_order_reject", args=[order.pk]), {"reason": "not today"})
    assert _statuses(order) == ["pending_approval", "rejected"]
    assert OrderEvent.objects.filter(order=order).last().reason == "not today"
    assert sent_refs(sim_gateway) == []


def test_approve_is_post_only(ib_runtime, approval_for_agents, staff_client):
    order = _agent_order("held-get")
    assert staff_client.get(reverse("admin:ibkrgw_order_approve", args=[order.pk])).status_code == 405
    assert _statuses(order) == ["pending_approval"]


def test_service_refusal_becomes_a_message(ib_runtime, sim_gateway, approval_for_agents, staff_client):
    order = _agent_order("held-halted")
    services.trading_halt(actor=Actor.system(), reason="incident")
    response = staff_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"}, follow=True)
    assert response.status_code == 200
    assert "halted" in response.content.decode().lower()
    assert _statuses(order) == ["pending_approval"]
    assert sent_refs(sim_gateway) == []


def test_admin_actions_approve_and_reject(ib_runtime, sim_gateway, approval_for_agents, superuser_client):
    sim_gateway.pause_market()
    yes, no = _agent_order("act-approve"), _agent_order("act-reject")
    # Approving asks first: the confirmation page lists the order and nothing is sent yet.
    page = superuser_client.post(CHANGELIST, {"action": "approve_selected", "_selected_action": [str(yes.pk)]})
    assert "act-approve" in page.content.decode() and 'name="confirmed"' in page.content.decode()
    assert sent_refs(sim_gateway) == []
    superuser_client.post(
        CHANGELIST, {"action": "approve_selected", "_selected_action": [str(yes.pk)], "confirmed": "yes"}
    )
    superuser_client.post(CHANGELIST, {"action": "reject_selected", "_selected_action": [str(no.pk)]})
    assert sent_refs(sim_gateway) == ["act-approve"]
    wait_for(lambda: _statuses(yes)[-1] == "filled", message="approved order filled")
    assert _statuses(no) == ["pending_approval", "rejected"]


def test_cancel_action_cancels_working_orders_and_reports_the_others(
    ib_runtime, sim_gateway, orders_enabled, superuser_client
):
    sim_gateway.pause_market()
    resting = resting_limit(sim_gateway, "rest-1")  # rests at the broker while the market stands still
    orders_enabled.ORDERS_ENABLED = False
    simulated = _agent_order("sim-1")

    selected = [str(resting.pk), str(simulated.pk)]
    page = superuser_client.post(CHANGELIST, {"action": "cancel_selected", "_selected_action": selected})
    assert "Cancel these orders" in page.content.decode()
    assert _statuses(resting)[-1] == "submitted"  # nothing cancelled before confirming
    response = superuser_client.post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": selected, "confirmed": "yes"}, follow=True
    )
    body = response.content.decode()
    assert "1 order(s) asked to cancel." in body
    assert "Order sim-1: An order in state simulated cannot be cancelled." in body
    wait_for(lambda: _statuses(resting)[-1] == "cancelled", message="order cancelled at the broker")
    assert _statuses(simulated) == ["simulated"]


def test_bulk_approval_sends_the_others_and_keeps_the_placers_own_order_waiting(
    ib_runtime, sim_gateway, orders_enabled, superuser_client
):
    from ibkrgw.actors import ActorKind, Source

    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset({"user", "mcp"})
    sim_gateway.pause_market()
    mine = services.order_submit(
        request=OrderRequest(
            symbol="AAPL", action="BUY", quantity=Decimal(1), order_type="MKT", client_order_id="mine"
        ),
        actor=Actor(kind=ActorKind.USER, label="root", source=Source.REST, is_admin=True),
    ).order
    theirs = _agent_order("theirs")
    page = superuser_client.post(
        CHANGELIST,
        {"action": "approve_selected", "_selected_action": [str(mine.pk), str(theirs.pk)], "confirmed": "yes"},
        follow=True,
    )
    body = page.content.decode()
    assert "1 order(s) approved and sent" in body and "another user must approve it" in body
    assert sent_refs(sim_gateway) == ["theirs"]
    assert _statuses(mine) == ["pending_approval"]
    assert AuditEntry.objects.get(event="gate.blocked").data["code"] == "self_approval"
