"""A process killed around the send is reconciled with no duplicate and nothing re-sent."""

import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.utils import timezone

from brokers import runtime
from orders import services
from orders.models import Fill, Order, OrderEvent
from orders.services import recording
from tests.conftest import subprocess_database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _crash(port: int, client_order_id: str, when: str) -> int:
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "ORDERS_ENABLED": "true",
        "IB_GATEWAY": f"127.0.0.1:{port}",
        "TRADING_HOURS": "always",  # the simulated market never closes
        "DJANGO_SETTINGS_MODULE": "ibkrgw.settings",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.orders.crash_order", str(port), client_order_id, when],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 1, result.stderr[-3000:]
    return result.returncode


def _statuses(order):
    return list(OrderEvent.objects.filter(order=order).order_by("id").values_list("status", flat=True))


def _restart(port: int):
    recording.PROCESS_STARTED_AT = timezone.now()  # this process plays the restarted one
    runtime.start(host="127.0.0.1", port=port, client_id=1)
    wait_for(lambda: runtime.current().worker.reconciled.is_set(), message="reconciled after restart")
    runtime.current().recorder.wait_idle()


def test_killed_after_intent_leaves_the_order_unknown_and_never_sent(sim_gateway, orders_enabled):
    assert _crash(sim_gateway.port, "crash-intent", "after_intent") == 17
    order = Order.objects.get(client_order_id="crash-intent")
    assert _statuses(order) == ["pending_submit"]
    try:
        _restart(sim_gateway.port)
        assert _statuses(order)[-1] == "unknown"
        assert [o for o in sim_gateway.received_orders() if not o.what_if] == []
    finally:
        runtime.stop()


def test_killed_after_send_is_reconciled_with_no_duplicate(sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    assert _crash(sim_gateway.port, "crash-sent", "after_send") == 17
    order = Order.objects.get(client_order_id="crash-sent")
    try:
        _restart(sim_gateway.port)
        wait_for(lambda: _statuses(order)[-1] == "filled", message="reconciled to filled")
        assert "unknown" not in _statuses(order)
        fills = Fill.objects.filter(order=order)
        assert sum(f.quantity for f in fills) == Decimal(5)
        assert len([o for o in sim_gateway.received_orders() if not o.what_if]) == 1
    finally:
        runtime.stop()


def test_fills_while_disconnected_are_recorded_once_after_reconnect(
    ib_runtime, api_client, sim_gateway, orders_enabled
):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    order_id = api_client.post(
        "/api/v1/orders/",
        {
            "client_order_id": "away-1",
            "symbol": "AAPL",
            "action": "BUY",
            "quantity": "10",
            "order_type": "LMT",
            "limit_price": "186.00",
        },
        format="json",
    ).json()["id"]
    wait_for(lambda: OrderEvent.objects.filter(order_id=order_id, status="submitted").exists(), message="resting")
    sim_gateway.faults.refuse_connections(1.5)
    sim_gateway.faults.drop_all_connections()
    wait_for(lambda: ib_runtime.worker.state != "connected", message="disconnected")
    sim_gateway.set_price("AAPL", Decimal("185.00"))  # fills at the gateway while we are away
    wait_for(lambda: ib_runtime.worker.reconciled.is_set(), timeout=20, message="reconnected and reconciled")
    ib_runtime.recorder.wait_idle()
    wait_for(lambda: Fill.objects.filter(order_id=order_id).exists(), message="fill recorded after reconnect")
    assert OrderEvent.objects.filter(order_id=order_id).order_by("-id").first().status == "filled"
    # A second reconciliation adds nothing.
    services.orders_reconcile(snapshot=ib_runtime.adapter.snapshot())
    assert Fill.objects.filter(order_id=order_id).count() == 1


def test_a_modify_the_broker_got_before_the_crash_is_in_force_in_the_ledger_after_restart(sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    assert _crash(sim_gateway.port, "crash-modified", "after_modify_send") == 17
    wait_for(lambda: len([o for o in sim_gateway.received_orders() if not o.what_if]) == 2, message="the change")
    sent = [o for o in sim_gateway.received_orders() if not o.what_if]
    assert [(o.order_ref, o.lmt_price) for o in sent] == [
        ("crash-modified", Decimal("182.00")),
        ("crash-modified", Decimal("183.00")),
    ]
    order = Order.objects.get(client_order_id="crash-modified")
    assert services.order_terms(order)["limit_price"] == Decimal("182.00")  # the change was never recorded
    try:
        _restart(sim_gateway.port)
        # The ledger says what the broker works: a later modify, the console and the gates start from it.
        terms = services.order_terms(order)
        assert (terms["quantity"], terms["limit_price"]) == (Decimal(5), Decimal("183.00"))
        assert _statuses(order)[-1] == "submitted"
        assert len([o for o in sim_gateway.received_orders() if not o.what_if]) == 2  # nothing sent again
        # Another reconciliation finds nothing more to record.
        events_before = OrderEvent.objects.filter(order=order).count()
        assert services.orders_reconcile(snapshot=runtime.current().adapter.snapshot())["terms_at_broker"] == 0
        assert OrderEvent.objects.filter(order=order).count() == events_before
    finally:
        runtime.stop()
