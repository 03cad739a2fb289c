"""The operator dashboard: who may see it, and what it shows with the broker up or down."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit import events
from orders.models import OrderStatus
from tests.factories import FillFactory, OrderEventFactory, audit_entry

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:ibkrgw_dashboard")
LIVE = reverse("admin:ibkrgw_dashboard_live")


@pytest.mark.parametrize("url", [DASHBOARD, LIVE, reverse("admin:ibkrgw_trading_halt")])
def test_console_pages_send_anonymous_and_non_staff_people_to_the_login(client, user_client, url):
    for who in (client, user_client):
        response = who.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_dashboard_renders_for_staff_with_the_broker_down(staff_client):
    response = staff_client.get(DASHBOARD)
    assert response.status_code == 200
    body = response.content.decode()
    # No runtime in this process: a clear note instead of positions, never a 500.
    assert "Broker unavailable (gateway not_started)" in body
    assert 'id="ibkrgw-halt"' in body
    assert "PAPER" in body
    assert "ibkrgw-live-banner" not in body


def test_admin_index_links_the_dashboard(staff_client):
    body = staff_client.get(reverse("admin:index")).content.decode()
    assert f'href="{DASHBOARD}"' in body


def test_dashboard_shows_todays_orders_fills_blocks_and_limits(staff_client, settings):
    settings.RISK_MAX_ORDERS_PER_MINUTE = 17
    filled = OrderEventFactory(status=OrderStatus.FILLED).order
    FillFactory(order=filled, exec_id="exec-dash-1")
    OrderEventFactory(status=OrderStatus.SIMULATED)
    OrderEventFactory(status=OrderStatus.SIMULATED)
    audit_entry(event=events.GATE_BLOCKED, data={"code": "risk_max_quantity"})
    audit_entry(event=events.GATE_BLOCKED, data={"code": "risk_max_quantity"})
    audit_entry(event=events.GATE_BLOCKED, data={"code": "trading_halted"})

    response = staff_client.get(DASHBOARD)
    counts = dict(response.context["order_counts"])
    assert counts == {"filled": 1, "simulated": 2}
    assert response.context["fills_today"] == 1
    assert response.context["gate_blocks"] == [("risk_max_quantity", 2), ("trading_halted", 1)]
    body = response.content.decode()
    assert filled.client_order_id in body
    assert "ISLAND" in body  # the fill's exchange
    assert "Max orders per minute" in body and ">17<" in body


def test_live_part_is_a_fragment_for_the_refresh(staff_client):
    response = staff_client.get(LIVE)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="ibkrgw-trading"' in body
    assert "<html" not in body


def test_dashboard_page_refreshes_itself(staff_client):
    body = staff_client.get(DASHBOARD).content.decode()
    assert f'data-url="{LIVE}"' in body
    assert "ibkrgw/dashboard.js" in body
    assert 'http-equiv="refresh"' in body  # the fallback without JavaScript


def test_live_mode_shows_a_red_banner_on_every_admin_page(staff_client, client, settings):
    settings.TRADING_MODE = "live"
    for page in (DASHBOARD, reverse("admin:index"), reverse("admin:orders_order_changelist")):
        body = staff_client.get(page).content.decode()
        assert 'id="ibkrgw-live-banner"' in body, page
        assert "LIVE TRADING" in body
    # Even before signing in.
    assert 'id="ibkrgw-live-banner"' in client.get(reverse("admin:login")).content.decode()


def test_dashboard_shows_positions_and_pnl_when_the_broker_is_connected(ib_runtime, sim_gateway, superuser_client):
    response = superuser_client.get(DASHBOARD)
    assert response.status_code == 200
    account = response.context["account"]
    assert account["available"] is True
    assert account["pnl"]["account"] == "DU1234567"
    body = response.content.decode()
    assert "Broker unavailable" not in body
    assert "connected" in body
    assert "DU1234567" in body
    assert str(response.context["health"]["gateway"]["server_version"]) in body
