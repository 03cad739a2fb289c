"""A ledger row written behind the application's back (a value the application cannot read) must not keep a
starting process from reconciling with the broker, and so from trading: the row is named in the log and left
out, and every other order is reconciled as usual."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from brokers import runtime
from orders.models import OrderStatus
from tests.audit.test_ledger_seal import rewrite_around_triggers, text_stored_database
from tests.conftest import wait_for
from tests.factories import OrderEventFactory, OrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_starting_process_reconciles_around_an_unreadable_order_and_trades(
    sim_gateway, orders_enabled, api_client, caplog
):
    text_stored_database()
    sim_gateway.pause_market()
    tampered = OrderFactory(client_order_id="tampered-1", symbol="AAPL")
    OrderEventFactory(order=tampered, status=OrderStatus.SUBMITTED, broker_order_id=9001)
    stale = OrderFactory(client_order_id="stale-1", symbol="MSFT")
    OrderEventFactory(order=stale, status=OrderStatus.SUBMITTED, broker_order_id=9002)
    rewrite_around_triggers("orders_order", tampered.pk.hex, "quantity", "abc")
    with caplog.at_level(logging.ERROR, logger="orders"):
        runtime.start(host="127.0.0.1", port=sim_gateway.port, client_id=1)
        try:
            rt = runtime.current()
            wait_for(lambda: rt.worker.reconciled.is_set(), timeout=30, message="connect and reconcile")
            # The other orders were reconciled: one the broker no longer holds is no longer working.
            stale_now = api_client.get(f"/api/v1/orders/{stale.pk}/").json()
            assert stale_now["status"] == "cancelled", stale_now
            # And the process trades.
            body = {"client_order_id": "after-1", "symbol": "AAPL", "action": "BUY", "quantity": "1"}
            placed = api_client.post(
                "/api/v1/orders/", {**body, "order_type": "LMT", "limit_price": "181.00"}, format="json"
            )
            assert placed.status_code == 201, placed.content
        finally:
            runtime.stop()
    assert f"orders_order pk={tampered.pk}: quantity holds" in caplog.text
    assert "run manage.py audit_verify" in caplog.text
    assert Decimal(placed.json()["quantity"]) == 1
