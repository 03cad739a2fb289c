"""Stored text is data, never markup: a script in a client order id, a reason or audit data shows escaped."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit import events
from orders.models import OrderStatus
from tests.console.conftest import XSS
from tests.factories import OrderEventFactory, TradingSwitchEventFactory, audit_entry, make_actor

pytestmark = pytest.mark.django_db

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _assert_escaped(response):
    assert response.status_code == 200
    body = response.content.decode()
    assert ESCAPED in body or "&lt;script&gt;" in body
    assert "<script>alert(1)" not in body


@pytest.fixture
def hostile():
    held = OrderEventFactory(
        status=OrderStatus.PENDING_APPROVAL, order__client_order_id=XSS, reason=XSS, data={"x": XSS}
    )
    rejected = OrderEventFactory(status=OrderStatus.REJECTED, reason=XSS, code=XSS)
    TradingSwitchEventFactory(reason=XSS, actor_label=XSS)
    entry = audit_entry(
        event=events.GATE_BLOCKED, actor=make_actor(label=XSS), target_id=XSS, data={"code": XSS, "message": XSS}
    )
    return {"held": held, "rejected": rejected, "entry": entry}


def test_order_list_and_detail_escape(superuser_client, hostile):
    order = hostile["held"].order
    _assert_escaped(superuser_client.get(reverse("admin:orders_order_changelist")))
    _assert_escaped(superuser_client.get(reverse("admin:orders_order_change", args=[order.pk])))


def test_order_event_pages_escape(superuser_client, hostile):
    _assert_escaped(superuser_client.get(reverse("admin:orders_orderevent_changelist")))
    for event in (hostile["held"], hostile["rejected"]):
        _assert_escaped(superuser_client.get(reverse("admin:orders_orderevent_change", args=[event.pk])))


def test_audit_pages_escape(superuser_client, hostile):
    _assert_escaped(superuser_client.get(reverse("admin:audit_auditentry_changelist")))
    _assert_escaped(superuser_client.get(reverse("admin:audit_auditentry_change", args=[hostile["entry"].pk])))


def test_trading_switch_pages_escape(superuser_client, hostile):
    _assert_escaped(superuser_client.get(reverse("admin:orders_tradingswitchevent_changelist")))


def test_dashboard_escapes(superuser_client, hostile):
    response = superuser_client.get(reverse("admin:ibkrgw_dashboard"))
    _assert_escaped(response)
    body = response.content.decode()
    # The held order (approval queue and latest orders), the kill switch reason and the gate block code.
    assert body.count(ESCAPED) >= 4
    _assert_escaped(superuser_client.get(reverse("admin:ibkrgw_trading_halt")))


def test_messages_about_an_order_escape_its_client_order_id(superuser_client, hostile):
    order = hostile["held"].order
    response = superuser_client.post(
        reverse("admin:ibkrgw_order_reject", args=[order.pk]), {"reason": XSS}, follow=True
    )
    _assert_escaped(response)
    assert f"Order {ESCAPED} rejected" in response.content.decode()

    # An admin action's per-order error names the order too.
    response = superuser_client.post(
        reverse("admin:orders_order_changelist"),
        {"action": "approve_selected", "_selected_action": [str(order.pk)], "confirmed": "yes"},
        follow=True,
    )
    _assert_escaped(response)
    assert f"Order {ESCAPED}: The order is rejected, not waiting for approval." in response.content.decode()
