"""A bracket: one request makes the entry and its take-profit and stop-loss exits, linked and one-cancels-other."""

from decimal import Decimal

import pytest

from audit.models import AuditEntry
from orders.models import Order
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _bracket(**overrides):
    body = {
        "client_order_id": "br-1",
        "symbol": "AAPL",
        "action": "BUY",
        "quantity": "10",
        "order_type": "LMT",
        "limit_price": "185.00",
        "take_profit": "195.00",
        "stop_loss": "181.00",
    }
    return {**body, **overrides}


def _status(api_client, order_id):
    return api_client.get(f"/api/v1/orders/{order_id}/").json()["status"]


def _children(api_client, order_id):
    return {c["role"]: c for c in api_client.get(f"/api/v1/orders/{order_id}/").json()["children"]}


def test_simulated_bracket_records_three_linked_orders(ib_runtime, api_client, sim_gateway):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))  # exits inside the collar whatever the time of day
    response = api_client.post("/api/v1/orders/", _bracket(), format="json")
    assert response.status_code == 201, response.content
    entry = response.json()
    assert entry["status"] == "simulated"
    assert entry["role"] == "entry"
    children = {c["role"]: c for c in entry["children"]}
    assert set(children) == {"take_profit", "stop_loss"}
    assert children["take_profit"]["client_order_id"] == "br-1.tp"
    assert {c["status"] for c in children.values()} == {"simulated"}
    rows = {o.role: o for o in Order.objects.all()}
    assert rows["take_profit"].action == rows["stop_loss"].action == "SELL"
    assert rows["take_profit"].limit_price == Decimal("195.00")
    assert rows["stop_loss"].stop_price == Decimal("181.00")
    assert rows["take_profit"].oca_group == rows["stop_loss"].oca_group == "br-1.oca"
    assert rows["take_profit"].parent_id == rows["stop_loss"].parent_id == rows["entry"].pk
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []


def test_bracket_fills_the_entry_then_one_exit_cancels_the_other(ib_runtime, api_client, sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    response = api_client.post("/api/v1/orders/", _bracket(), format="json")
    assert response.status_code == 201, response.content
    entry_id = response.json()["id"]
    sent = [o for o in sim_gateway.received_orders() if not o.what_if]
    assert [o.order_ref for o in sent] == ["br-1", "br-1.sl", "br-1.tp"]
    # As IB asks of a bracket: the entry and the first exit are held, the last exit transmits all three,
    # so the entry never works at the broker without its exits attached.
    assert [o.transmit for o in sent] == [False, False, True]
    assert [o.parent_id for o in sent] == [0, sent[0].order_id, sent[0].order_id]
    sim_gateway.set_price("AAPL", Decimal("184.50"))
    wait_for(lambda: _status(api_client, entry_id) == "filled", message="entry filled")
    sim_gateway.set_price("AAPL", Decimal("195.50"))
    wait_for(lambda: _children(api_client, entry_id)["take_profit"]["status"] == "filled", message="take profit")
    wait_for(lambda: _children(api_client, entry_id)["stop_loss"]["status"] == "cancelled", message="stop cancelled")
    assert sim_gateway.positions().get(265598, Decimal(0)) == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"take_profit": "183.00"}, "take_profit"),  # a buy takes profit above the entry
        ({"stop_loss": "186.00"}, "stop_loss"),  # and stops out below it
        ({"order_type": "STP", "limit_price": None, "stop_price": "185.00"}, "order_type"),
        ({"client_order_id": "x" * 62}, "client_order_id"),
    ],
)
def test_a_bracket_with_exits_on_the_wrong_side_is_refused(ib_runtime, api_client, sim_gateway, overrides, field):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    response = api_client.post("/api/v1/orders/", _bracket(**overrides), format="json")
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_order"
    assert error["details"] == {"gate": "validation", "field": field}
    assert Order.objects.count() == 0
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []


@pytest.mark.parametrize(
    "overrides",
    [{"stop_loss": ""}, {"take_profit": "  "}, {"stop_loss": "", "take_profit": ""}, {"limit_price": ""}],
    ids=["stop_loss", "take_profit", "both", "limit_price"],
)
def test_a_blank_price_is_refused_not_read_as_no_price(ib_runtime, api_client, sim_gateway, orders_enabled, overrides):
    """A nullable price given as "" is not a number: refused as such. Read as null (DRF's way), a bracket whose
    stop_loss was left blank went out as a plain entry, with no stop behind it."""
    response = api_client.post("/api/v1/orders/", _bracket(**overrides), format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert set(error["details"]["fields"]) == set(overrides)
    assert Order.objects.count() == 0
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []
    refused = AuditEntry.objects.filter(event="request.refused").latest("seq")
    assert refused.data["code"] == "invalid_request"
    # Null is how "no exit" is said: the entry alone, a plain order.
    plain = api_client.post("/api/v1/orders/", _bracket(stop_loss=None, take_profit=None), format="json")
    assert plain.status_code == 201, plain.content
    assert plain.json()["children"] == []
