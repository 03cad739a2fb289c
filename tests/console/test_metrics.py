"""/metrics shows what an operator alerts on, once orders were placed and a gate blocked one."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_metrics_expose_orders_events_blocks_and_connection(ib_runtime, sim_gateway, api_client, orders_enabled):
    sim_gateway.pause_market()
    body = {"client_order_id": "m-1", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}
    placed = api_client.post("/api/v1/orders/", body, format="json")
    assert placed.status_code == 201, placed.content
    too_big = {**body, "client_order_id": "m-2", "quantity": str(orders_enabled.RISK_MAX_ORDER_QUANTITY + 1)}
    blocked = api_client.post("/api/v1/orders/", too_big, format="json")
    assert blocked.json()["error"]["code"] == "risk_max_quantity"
    wait_for(lambda: api_client.get(f"/api/v1/orders/{placed.json()['id']}/").json()["status"] == "filled")

    text = api_client.get("/metrics").content.decode()
    assert 'ibkrgw_orders{status="filled"} 1.0' in text
    assert 'ibkrgw_order_events_total{status="filled"}' in text
    assert 'ibkrgw_gate_blocks_total{code="risk_max_quantity"}' in text
    assert "ibkrgw_broker_connected 1.0" in text
