"""Why the broker stopped an order: IB's error code and text stay in the order's events.

The simulated gateway (real TCP, the real ib_async worker) rejects and cancels orders as IB does: the
status first, the error right after it (201 for a rejection, 202 for a cancel); the tests also send the
error before any status, as IB may.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = Decimal("190.00")


def _order(ref: str, **overrides) -> dict:
    body = {"client_order_id": ref, "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "LMT"}
    return {**body, "limit_price": "181.00", **overrides}


@pytest.fixture
def resting(ib_runtime, sim_gateway, orders_enabled):
    """Limit orders below the market rest (the market does not move by itself)."""
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", PRICE)
    return sim_gateway


def _body(api_client, order_id) -> dict:
    response = api_client.get(f"/api/v1/orders/{order_id}/")
    assert response.status_code == 200, response.content
    return response.json()


def _events(api_client, order_id) -> list[tuple[str, str, str]]:
    return [(e["status"], e["code"], e["reason"]) for e in _body(api_client, order_id)["events"]]


def _settled(ib_runtime) -> None:
    """Every message the gateway sent so far has been handled and recorded: a round trip on the same socket
    comes back behind them."""
    ib_runtime.adapter.open_orders()
    ib_runtime.recorder.wait_idle()


def test_an_order_the_broker_rejects_shows_ib_s_code_and_text(resting, api_client, ib_runtime):
    resting.faults.reject_order("rej-1", "The order size is not accepted.")
    placed = api_client.post("/api/v1/orders/", _order("rej-1"), format="json")
    assert placed.status_code == 201, placed.content
    order_id = placed.json()["id"]
    text = "Order rejected - reason:The order size is not accepted."

    wait_for(lambda: ("rejected", "201", text) in _events(api_client, order_id), message="the rejection's reason")
    _settled(ib_runtime)
    body = _body(api_client, order_id)
    assert body["status"] == "rejected"  # final: IB shows it Inactive, never to work again
    latest = body["events"][-1]
    assert (latest["status"], latest["code"], latest["reason"], latest["source"]) == ("rejected", "201", text, "worker")
    assert [o.status for o in resting.orders() if o.order_ref == "rej-1"] == ["Inactive"]


def test_a_rejection_ib_reports_before_any_status_keeps_its_text(resting, api_client, ib_runtime):
    resting.faults.never_answer(3)  # the gateway takes the order without a word ...
    order_id = api_client.post("/api/v1/orders/", _order("rej-first"), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["broker_order_id"] is not None, message="handed to the connection")
    broker_id = _body(api_client, order_id)["broker_order_id"]
    # ... and then refuses it with an error on its order id, before any status of it.
    resting.send_error(201, "Order rejected - reason:Trading is not allowed.", req_id=broker_id, client_id=1)

    wait_for(lambda: _body(api_client, order_id)["status"] == "rejected", message="the rejection recorded")
    _settled(ib_runtime)
    assert _events(api_client, order_id)[-1] == ("rejected", "201", "Order rejected - reason:Trading is not allowed.")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (203, "The security is not available or allowed for this account."),
        (103, "Duplicate order id"),
    ],
)
def test_another_error_that_stops_a_new_order_is_a_rejection_with_its_code(code, text, resting, api_client, ib_runtime):
    # IB refuses new orders with other codes than 201 too: the order never worked at the broker.
    resting.faults.never_answer(3)
    ref = f"refused-{code}"
    order_id = api_client.post("/api/v1/orders/", _order(ref), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["broker_order_id"] is not None, message="handed to the connection")
    resting.send_error(code, text, req_id=_body(api_client, order_id)["broker_order_id"], client_id=1)

    wait_for(lambda: _body(api_client, order_id)["status"] == "rejected", message="the refusal recorded")
    _settled(ib_runtime)
    assert _events(api_client, order_id)[-1] == ("rejected", str(code), text)


def test_ib_s_own_cancel_keeps_its_reason(resting, api_client, ib_runtime):
    # An IOC limit below the market: IB cancels what it could not fill at once, and says why (202).
    order_id = api_client.post("/api/v1/orders/", _order("ioc-1", tif="IOC"), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["status"] == "cancelled", message="cancelled by the broker")
    _settled(ib_runtime)
    events = _events(api_client, order_id)
    assert events[-1] == ("cancelled", "202", "Order Canceled - reason:IOC order remainder cancelled")
    assert [status for status, _, _ in events].count("cancelled") <= 2  # the stop, and its reason if it came late


def test_a_user_s_own_cancel_is_not_labelled_with_ib_s_confirmation(resting, api_client, ib_runtime):
    order_id = api_client.post("/api/v1/orders/", _order("mine-1"), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["status"] == "submitted", message="resting")
    assert api_client.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 200
    wait_for(lambda: _body(api_client, order_id)["status"] == "cancelled", message="cancelled")
    _settled(ib_runtime)  # IB's 202 (sent after the status) has been handled

    events = _events(api_client, order_id)
    assert [event for event in events if event[0] == "cancelled"] == [("cancelled", "", "")]
    assert {code for _, code, _ in events} == {""}


def test_the_kill_switch_s_cancel_is_not_labelled_with_ib_s_confirmation(resting, api_client, ib_runtime):
    order_id = api_client.post("/api/v1/orders/", _order("halted-1"), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["status"] == "submitted", message="resting")
    assert api_client.post("/api/v1/trading/halt/", {"reason": "drill"}, format="json").status_code == 200
    wait_for(lambda: _body(api_client, order_id)["status"] == "cancelled", message="cancelled by the halt")
    _settled(ib_runtime)
    assert not [event for event in _events(api_client, order_id) if event[1] == "202"]


def test_a_refused_modification_is_not_the_reason_of_a_later_cancel(resting, api_client, ib_runtime):
    order_id = api_client.post("/api/v1/orders/", _order("mod-then-cancel"), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["status"] == "submitted", message="resting")
    broker_id = _body(api_client, order_id)["broker_order_id"]
    resting.send_error(201, "Order rejected - reason:The modification is not accepted.", req_id=broker_id, client_id=1)
    _settled(ib_runtime)
    assert _body(api_client, order_id)["status"] == "submitted"  # the order works on

    assert api_client.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 200
    wait_for(lambda: _body(api_client, order_id)["status"] == "cancelled", message="cancelled")
    _settled(ib_runtime)
    assert not [event for event in _events(api_client, order_id) if event[1] == "201"]


def test_a_modification_the_broker_refuses_leaves_the_order_recorded_with_the_terms_it_works_with(
    resting, api_client, ib_runtime, settings
):
    # A Toronto listing in CAD: the gateway leaves the buying power of a USD account to the broker, whose margin
    # check refuses the larger order (201); the order works on at the broker with its earlier quantity.
    settings.RISK_MAX_ORDER_QUANTITY, settings.RISK_MAX_ORDER_NOTIONAL = 100_000, 10**9
    resting.set_price(195014132, "102.00")
    shop = {
        "symbol": "SHOP",
        "exchange": "SMART",
        "primary_exchange": "TSE",
        "currency": "CAD",
        "limit_price": "100.00",
    }
    order_id = api_client.post("/api/v1/orders/", _order("shop-mod", **shop), format="json").json()["id"]
    wait_for(lambda: _body(api_client, order_id)["status"] == "submitted", message="resting")

    changed = api_client.patch(f"/api/v1/orders/{order_id}/", {"quantity": "30000"}, format="json")
    assert changed.status_code == 200, changed.content  # sent; the broker answers afterwards
    wait_for(lambda: _body(api_client, order_id)["quantity"] == "1", message="the broker's terms recorded")
    _settled(ib_runtime)
    assert [(o.status, o.total_quantity) for o in resting.orders() if o.order_ref == "shop-mod"] == [("Submitted", 1)]
    body = _body(api_client, order_id)
    assert (body["status"], body["remaining_quantity"]) == ("submitted", "1")
    latest = body["events"][-1]
    assert (latest["status"], latest["code"], latest["source"]) == ("submitted", "201", "worker")
    assert "YOUR ORDER IS NOT ACCEPTED" in latest["reason"]
    assert latest["data"]["from_broker"] is True
    held = latest["data"]["modified"]
    assert (Decimal(held["quantity"]), Decimal(held["limit_price"]), held["stop_price"]) == (1, 100, None)
