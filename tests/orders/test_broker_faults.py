"""The ledger against what the broker holds, when the gateway misbehaves or other clients share the account.

Each test drives the REST API, lets the simulated gateway (real TCP, the real ib_async worker) drop,
stall or serve other clients, and then compares the ledger with what an independent ib_async client
(client id 77) reads from the broker.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from ib_async import IB, LimitOrder, Stock

from audit.models import AuditEntry
from brokers import runtime
from brokers.sim.server import SimGateway
from ibkrgw.errors import BrokerUnavailable
from orders import pipeline as pipeline_module
from orders.models import Fill, Order, OrderEvent
from orders.pipeline import Command, pipeline
from orders.services import order_terms
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = Decimal("190.00")


def _order(**overrides) -> dict:
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "LMT", "limit_price": "181.00"}
    return {**body, **overrides}


@pytest.fixture
def resting(ib_runtime, sim_gateway, orders_enabled):
    """Limit orders below the market rest (the market does not move by itself)."""
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", PRICE)
    return sim_gateway


@pytest.fixture
def other_client(resting):
    """Another program of the account, on its own ib_async connection."""
    ib = IB()
    ib.connect("127.0.0.1", resting.port, clientId=77, timeout=10)
    yield ib
    ib.disconnect()


def _status(api_client, order_id) -> str:
    return api_client.get(f"/api/v1/orders/{order_id}/").json()["status"]


def _reconnect(gateway, rt) -> None:
    """The gateway drops every connection; the worker reconnects and reconciles."""
    gateway.faults.refuse_connections(1)
    gateway.faults.drop_all_connections()
    wait_for(lambda: not rt.worker.reconciled.is_set(), timeout=30, message="disconnected")
    wait_for(lambda: rt.worker.reconciled.is_set(), timeout=40, message="reconnected and reconciled")
    rt.recorder.wait_idle()


def test_another_clients_orders_with_our_order_ref_leave_our_order_as_the_broker_holds_it(
    resting, api_client, ib_runtime, other_client
):
    order_id = api_client.post("/api/v1/orders/", _order(client_order_id="shared-ref"), format="json").json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    # Another program uses the same orderRef (IB does not stop it): one order it cancels, one that fills.
    cancelled = LimitOrder("BUY", 1, 185.0, orderRef="shared-ref")
    other_client.placeOrder(Stock("AAPL", "SMART", "USD"), cancelled)
    other_client.cancelOrder(cancelled)
    filled = other_client.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 2, 195.0, orderRef="shared-ref"))
    wait_for(lambda: other_client.sleep(0.02) or filled.isDone(), message="the other client's order filled")
    _reconnect(resting, ib_runtime)  # reconciliation reads every client's open and completed orders

    ours = [o for o in resting.orders() if o.order_ref == "shared-ref" and o.client_id == 1]
    assert [o.status for o in ours] == ["Submitted"]  # still working at the broker
    body = api_client.get(f"/api/v1/orders/{order_id}/").json()
    assert (body["status"], body["fills"], body["filled_quantity"]) == ("submitted", [], "0")
    # The other client's execution is the account's, recorded once, under no order of ours.
    assert list(Fill.objects.values_list("order_id", "quantity")) == [(None, Decimal(2))]
    # And the order is still ours to cancel.
    assert api_client.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 200
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="cancelled")


def test_fills_after_the_gateway_restarted_with_an_empty_book_are_recorded(resting, api_client, ib_runtime):
    before = api_client.post("/api/v1/orders/", _order(client_order_id="rs-1", limit_price="195.00"), format="json")
    wait_for(lambda: _status(api_client, before.json()["id"]) == "filled", message="first order filled")
    port = resting.port
    resting.stop()
    wait_for(lambda: not ib_runtime.worker.reconciled.is_set(), timeout=30, message="disconnected")
    fresh = SimGateway(host="127.0.0.1", port=port, trading_hours="always", ib_limits=False)  # same seed
    fresh.start()
    try:
        fresh.set_price("AAPL", PRICE)
        wait_for(lambda: ib_runtime.worker.reconciled.is_set(), timeout=40, message="reconnected to the new gateway")
        after = api_client.post("/api/v1/orders/", _order(client_order_id="rs-2", limit_price="195.00"), format="json")
        order_id = after.json()["id"]
        wait_for(lambda: _status(api_client, order_id) == "filled", message="second order filled")
        ib_runtime.recorder.wait_idle()
        assert [f["quantity"] for f in api_client.get(f"/api/v1/orders/{order_id}/").json()["fills"]] == ["1"]
    finally:
        fresh.stop()


def test_a_modification_lost_with_the_connection_is_recorded_as_the_broker_holds_the_order(
    resting, api_client, ib_runtime
):
    order_id = api_client.post("/api/v1/orders/", _order(client_order_id="lost-mod", quantity="2"), format="json")
    order_id = order_id.json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    resting.faults.delay(3, 60)  # the gateway stalls on placeOrder (which carries modifications) ...
    changed = api_client.patch(f"/api/v1/orders/{order_id}/", {"quantity": "3"}, format="json")
    assert changed.status_code == 200, changed.content  # handed to the connection
    assert order_terms(Order.objects.get(pk=order_id))["quantity"] == 3
    resting.faults.clear()
    _reconnect(resting, ib_runtime)  # ... and drops the connection before acting on it

    [held] = [o for o in resting.orders() if o.order_ref == "lost-mod"]
    assert (held.status, held.total_quantity) == ("Submitted", 2)
    body = api_client.get(f"/api/v1/orders/{order_id}/").json()
    assert (body["status"], body["remaining_quantity"], body["events"][-1]["code"]) == (
        "submitted",
        "2",
        "terms_at_broker",
    )
    assert order_terms(Order.objects.get(pk=order_id))["quantity"] == 2
    # A later price change keeps the quantity the broker holds.
    repriced = api_client.patch(f"/api/v1/orders/{order_id}/", {"limit_price": "182.00"}, format="json")
    assert repriced.status_code == 200, repriced.content
    wait_for(
        lambda: (
            [(r.total_quantity, r.lmt_price) for r in resting.received_orders() if r.order_ref == "lost-mod"][-1]
            == (2, Decimal("182"))
        ),
        message="repriced at the broker",
    )


def test_fills_while_disconnected_are_reconciled_with_their_quantities_and_price(
    sim_gateway_factory, api_client, orders_enabled
):
    # Each price move fills at most 5 shares, and the market moves only when the test moves it.
    gateway = sim_gateway_factory(partial_fill_threshold=5, tick_interval=3600)
    gateway.set_price("AAPL", PRICE)
    runtime.start(host="127.0.0.1", port=gateway.port, client_id=1)
    rt = runtime.current()
    try:
        wait_for(lambda: rt.worker.reconciled.is_set(), message="connected")
        done, part = (
            api_client.post(
                "/api/v1/orders/", _order(client_order_id=ref, quantity=qty, limit_price="186.00"), format="json"
            ).json()["id"]
            for ref, qty in (("away-10", "10"), ("away-12", "12"))
        )
        wait_for(lambda: _status(api_client, done) == _status(api_client, part) == "submitted", message="resting")
        gateway.faults.refuse_connections(1)
        gateway.faults.drop_all_connections()
        wait_for(lambda: not rt.worker.reconciled.is_set(), message="disconnected")
        for _ in range(2):  # 5 + 5 shares each while the gateway cannot tell us
            gateway.set_price("AAPL", Decimal("185.00"))
        wait_for(lambda: rt.worker.reconciled.is_set(), timeout=30, message="reconnected and reconciled")
        rt.recorder.wait_idle()
        held = {o.order_ref: o for o in gateway.orders()}
        for order_id, ref in ((done, "away-10"), (part, "away-12")):
            body = api_client.get(f"/api/v1/orders/{order_id}/").json()
            broker = held[ref]
            assert (body["status"], Decimal(body["filled_quantity"])) == (
                "filled" if broker.status == "Filled" else "partially_filled",
                broker.filled,
            ), body
            assert Decimal(body["average_fill_price"]) == broker.avg_fill_price
            assert sum(Decimal(f["quantity"]) for f in body["fills"]) == broker.filled == 10
    finally:
        runtime.stop()


def test_a_gateway_that_stops_answering_is_treated_as_down_until_it_answers_again(resting, api_client, ib_runtime):
    worker = ib_runtime.worker
    worker.heartbeat_s, worker.heartbeat_timeout_s = 0.1, 1.0
    for msg_id in range(1, 110):  # every request is answered ten minutes late: the gateway is hung
        resting.faults.delay(msg_id, 600)
    wait_for(lambda: worker.state != "connected", timeout=15, message="the silence noticed")
    health = api_client.get("/api/v1/health/").json()
    assert (health["status"], health["gateway"]["connected"]) == ("degraded", False)
    refused = api_client.post("/api/v1/orders/", _order(client_order_id="hung-1"), format="json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "broker_unavailable")
    assert [o for o in resting.received_orders() if o.order_ref == "hung-1"] == []
    resting.faults.clear()
    wait_for(lambda: worker.reconciled.is_set(), timeout=60, message="answering again, reconnected")
    placed = api_client.post("/api/v1/orders/", _order(client_order_id="hung-2"), format="json")
    assert placed.status_code == 201, placed.content
    wait_for(lambda: _status(api_client, placed.json()["id"]) == "submitted", message="at the broker")


@pytest.fixture
def slow_broker_calls(settings, monkeypatch):
    """Broker calls may take longer than a request waits for the order pipeline (IB_REQUEST_TIMEOUT up to
    600 s against a 30 s wait); here 5 s against 1 s."""
    settings.IB_REQUEST_TIMEOUT = 5
    monkeypatch.setattr(pipeline_module, "RESULT_TIMEOUT_S", 1.0)


def test_requests_stuck_behind_a_slow_broker_call_answer_504_and_are_not_run_later(
    slow_broker_calls, resting, api_client, ib_runtime
):
    ib_runtime.worker.heartbeat_s = 3600  # the stall is the subject here, not its detection
    order_id = api_client.post("/api/v1/orders/", _order(client_order_id="stuck-1"), format="json").json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    resting.faults.delay(16, 600)  # reqAllOpenOrders, as the halt sweep sends it, goes unanswered
    started = threading.Event()
    blocker = Command(run=lambda: started.set() or runtime.adapter().open_orders())

    def wait_on_it() -> None:
        with pytest.raises(BrokerUnavailable):  # IB's answer never comes: broker_timeout
            pipeline().execute(blocker, 30)

    threading.Thread(target=wait_on_it, daemon=True).start()
    wait_for(started.is_set, message="the pipeline waits on the broker")

    cancel = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (504, "broker_timeout"), cancel.content
    assert cancel.json()["error"]["details"]["done"] is False
    halt = api_client.post("/api/v1/trading/halt/", {"reason": "stuck"}, format="json")
    assert (halt.status_code, halt.json()["error"]["details"]["done"]) == (504, None)  # a halt stays queued

    resting.faults.clear()
    wait_for(blocker.future.done, timeout=15, message="the slow call timed out")
    pipeline().drain()
    assert {c.order_id for c in resting.received_cancels()} == {None}  # the halt's global cancel, not the 504's
    assert not OrderEvent.objects.filter(order_id=order_id, status="cancel_pending", source="rest").exists()
    assert api_client.get("/api/v1/health/").json()["trading_halted"] is True


def test_an_error_ib_reports_on_a_working_order_does_not_record_it_cancelled_while_it_works(
    resting, api_client, ib_runtime
):
    order_id = api_client.post("/api/v1/orders/", _order(client_order_id="still-live"), format="json").json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    broker_id = api_client.get(f"/api/v1/orders/{order_id}/").json()["broker_order_id"]
    # What IB answers to a modification it refuses: an error on the order, which keeps working unchanged.
    resting.send_error(201, "Order rejected - reason:The modification is not accepted.", req_id=broker_id, client_id=1)
    ib_runtime.adapter.open_orders()  # a round trip on the same socket: the error has been handled before it
    ib_runtime.recorder.wait_idle()

    assert [o.status for o in resting.orders() if o.order_ref == "still-live"] == ["Submitted"]
    assert _status(api_client, order_id) == "submitted"
    assert api_client.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 200
    wait_for(
        lambda: [o.status for o in resting.orders() if o.order_ref == "still-live"] == ["Cancelled"], message="sent"
    )
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="cancelled")


def test_open_orders_asked_twice_at_once_are_both_answered(resting, api_client, ib_runtime):
    # The halt sweep and a reconciliation may ask at the same moment; ib_async keeps one such request at a time.
    placed = api_client.post("/api/v1/orders/", _order(client_order_id="asked-twice"), format="json")
    wait_for(lambda: _status(api_client, placed.json()["id"]) == "submitted", message="resting")
    resting.faults.delay(16, 0.5)  # reqAllOpenOrders answered late, so the second is sent before the first answer
    answers: list = []
    askers = [threading.Thread(target=lambda: answers.append(ib_runtime.adapter.open_orders())) for _ in range(2)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(30)
    assert [[o.order_ref for o in answer] for answer in answers] == [["asked-twice"], ["asked-twice"]]


def test_a_cancel_the_broker_never_answers_is_checked_with_it_and_does_not_stay_pending(
    resting, api_client, ib_runtime, monkeypatch
):
    monkeypatch.setattr(ib_runtime.worker, "unanswered_cancel_s", 1.0)
    monkeypatch.setattr(ib_runtime.worker, "heartbeat_s", 0.5)
    order_id = api_client.post("/api/v1/orders/", _order(client_order_id="lost-cancel"), format="json").json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    resting.faults.never_answer(4)  # the gateway loses the cancel; the connection stays up
    cancel = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    assert cancel.status_code == 200, cancel.content
    assert _status(api_client, order_id) == "cancel_pending"
    # No reconnect: the unanswered cancel is checked with the broker, which still works the order.
    wait_for(lambda: _status(api_client, order_id) == "submitted", timeout=30, message="the broker's answer")
    assert ib_runtime.worker.reconnects == 0
    assert [o.status for o in resting.orders() if o.order_ref == "lost-cancel"] == ["Submitted"]
    resting.faults.clear()
    assert api_client.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 200
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="cancelled on the second try")


def test_a_cancel_repeated_while_the_first_is_unanswered_answers_the_order_and_sends_nothing(
    resting, api_client, ib_runtime
):
    """A double click, or a client's retry: the broker gets one cancel, and no refusal of a second is recorded."""
    order_id = api_client.post("/api/v1/orders/", _order(client_order_id="twice"), format="json").json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    resting.faults.delay(4, 1.5)  # the gateway takes its time over cancels
    first = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    second = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    assert (first.status_code, second.status_code) == (200, 200), second.content
    assert second.json()["status"] in ("cancel_pending", "cancelled")  # the order as it is
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="cancelled")
    ib_runtime.recorder.wait_idle()
    assert len(resting.received_cancels()) == 1
    events = api_client.get(f"/api/v1/orders/{order_id}/").json()["events"]
    statuses = [e["status"] for e in events]
    assert statuses.count("cancel_pending") == 1 and statuses.count("cancelled") == 1, events
    assert statuses[-1] == "cancelled" and not events[-1]["code"], events  # no refusal of a second cancel


def test_a_modification_the_broker_never_confirms_is_checked_with_it_and_recorded_as_the_broker_holds_it(
    resting, api_client, ib_runtime, monkeypatch
):
    monkeypatch.setattr(ib_runtime.worker, "unconfirmed_modify_s", 1.0)
    monkeypatch.setattr(ib_runtime.worker, "heartbeat_s", 0.5)
    placed = api_client.post("/api/v1/orders/", _order(client_order_id="lost-modify", quantity="2"), format="json")
    order_id = placed.json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    resting.faults.never_answer(3)  # the gateway loses the modification (a placeOrder); the connection stays up
    changed = api_client.patch(f"/api/v1/orders/{order_id}/", {"quantity": "3", "limit_price": "182"}, format="json")
    assert changed.status_code == 200, changed.content  # handed to the connection: the terms sent
    assert (changed.json()["quantity"], changed.json()["limit_price"]) == ("3", "182")
    # No reconnect: the unconfirmed modification is checked with the broker, which still works the old terms.
    wait_for(
        lambda: (
            api_client.get(f"/api/v1/orders/{order_id}/").json()["events"][-1]["code"] == "modification_unconfirmed"
        ),
        timeout=30,
        message="the broker's terms recorded",
    )
    body = api_client.get(f"/api/v1/orders/{order_id}/").json()
    assert (body["status"], body["quantity"], body["limit_price"], body["remaining_quantity"]) == (
        "submitted",
        "2",
        "181",
        "2",
    )
    assert ib_runtime.worker.reconnects == 0
    assert [o.total_quantity for o in resting.orders() if o.order_ref == "lost-modify"] == [2]
    assert AuditEntry.objects.filter(event="order.modification_unconfirmed", target_id=str(order_id)).exists()
    # A modification the broker confirms stays recorded: nothing is left to check.
    resting.faults.clear()
    monkeypatch.setattr(ib_runtime.worker, "unconfirmed_modify_s", 600.0)
    again = api_client.patch(f"/api/v1/orders/{order_id}/", {"quantity": "3"}, format="json")
    assert again.status_code == 200, again.content
    wait_for(lambda: not ib_runtime.worker._modifies_sent, message="the broker confirmed the modification")
    assert [o.total_quantity for o in resting.orders() if o.order_ref == "lost-modify"] == [3]
    assert order_terms(Order.objects.get(pk=order_id))["quantity"] == 3


BRACKET = {
    "client_order_id": "cut",
    "symbol": "AAPL",
    "action": "BUY",
    "quantity": "1",
    "order_type": "LMT",
    "limit_price": "185.00",
    "take_profit": "195.00",
    "stop_loss": "181.00",
}
LEGS = ("cut", "cut.sl", "cut.tp")  # in the order they are sent: the last one transmits the bracket
WORKING_AT_IB = ("PendingSubmit", "PreSubmitted", "Submitted")


def _broker_legs(port: int) -> dict[str, str]:
    """The status of each leg the broker holds, by orderRef, as an independent client reads it."""
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=78, timeout=10)
    try:
        trades = [*ib.reqCompletedOrders(False), *ib.reqAllOpenOrders()]
        return {t.order.orderRef: t.orderStatus.status for t in trades if t.order.orderRef in LEGS}
    finally:
        ib.disconnect()


def _ledger_legs() -> dict[str, OrderEvent]:
    """The latest event of each leg, by client_order_id."""
    return {ref: OrderEvent.objects.filter(order__client_order_id=ref).latest("id") for ref in LEGS}


def _reconnected(rt) -> bool:
    return rt.worker.reconnects >= 1 and rt.worker.reconciled.is_set()


@pytest.mark.parametrize("legs_received", [1, 2], ids=["entry", "entry and stop"])
def test_a_bracket_cut_off_between_its_legs_is_withdrawn_and_never_completed(
    resting, api_client, ib_runtime, legs_received
):
    # The gateway takes the first legs (the entry, held untransmitted, perhaps the first exit too) and drops
    # every connection: the legs sent behind them are never read, so the broker holds an entry nothing will
    # ever transmit.
    resting.faults.drop_after(3, legs_received)
    placed = api_client.post("/api/v1/orders/", BRACKET, format="json")
    # Handed to the connection before it was found gone (201), or refused at a leg once it was (503).
    assert placed.status_code in (201, 503), placed.content
    wait_for(lambda: _reconnected(ib_runtime), timeout=40, message="reconnected and reconciled")
    held = LEGS[:legs_received]
    # The legs the broker held are cancelled there; nothing of the bracket works any more.
    wait_for(
        lambda: _broker_legs(resting.port) == dict.fromkeys(held, "Cancelled"),
        timeout=30,
        message="the held legs cancelled at the broker",
    )
    # The other legs were never sent, not even on the new connection (their prices may be stale).
    assert [o.order_ref for o in resting.received_orders() if not o.what_if] == list(held)
    ib_runtime.recorder.wait_idle()
    wait_for(
        lambda: all(e.status in ("cancelled", "rejected") for e in _ledger_legs().values()),
        timeout=30,
        message="every leg settled in the ledger",
    )
    # The ledger is the broker's view: cancelled where the broker held the leg, never working anywhere.
    legs = _ledger_legs()
    assert {ref: legs[ref].status for ref in held} == dict.fromkeys(held, "cancelled")
    assert {ref: legs[ref].code for ref in held} == dict.fromkeys(held, "bracket_incomplete")
    assert all(event.reason for event in legs.values()), {ref: (e.status, e.code) for ref, e in legs.items()}
    entry = api_client.get(f"/api/v1/orders/{Order.objects.get(client_order_id='cut').pk}/").json()
    assert [entry["status"], *(child["status"] for child in entry["children"])] == [
        legs[ref].status for ref in ("cut", "cut.sl", "cut.tp")
    ]


def test_a_bracket_sent_in_full_before_the_connection_dropped_keeps_working(resting, api_client, ib_runtime):
    resting.faults.drop_after(3, 3)  # all three legs reach the broker: the last one transmits the bracket
    placed = api_client.post("/api/v1/orders/", BRACKET, format="json")
    assert placed.status_code == 201, placed.content
    wait_for(lambda: _reconnected(ib_runtime), timeout=40, message="reconnected and reconciled")
    ib_runtime.recorder.wait_idle()
    at_broker = _broker_legs(resting.port)
    assert set(at_broker) == set(LEGS) and set(at_broker.values()) <= {"PreSubmitted", "Submitted"}
    assert {ref: event.status for ref, event in _ledger_legs().items()} == dict.fromkeys(LEGS, "submitted")
    assert not OrderEvent.objects.filter(code="bracket_incomplete").exists()
    resting.set_price("AAPL", Decimal("184.50"))  # the entry fills; its exits take over
    wait_for(lambda: _ledger_legs()["cut"].status == "filled", message="the entry filled")
    assert _broker_legs(resting.port) == {"cut": "Filled", "cut.sl": "Submitted", "cut.tp": "Submitted"}


def test_a_bracket_whose_transmitting_leg_the_broker_rejects_is_withdrawn_at_once(resting, api_client, ib_runtime):
    # The broker holds the entry and the stop untransmitted and rejects the leg that would transmit them;
    # the connection stays up.
    resting.faults.reject_order("cut.tp", "The take-profit price is not accepted.")
    placed = api_client.post("/api/v1/orders/", BRACKET, format="json")
    assert placed.status_code == 201, placed.content
    # No reconnect: the rejection has the broker's orders checked, and the held legs are cancelled there.
    wait_for(
        lambda: _broker_legs(resting.port) == {"cut": "Cancelled", "cut.sl": "Cancelled", "cut.tp": "Inactive"},
        timeout=30,
        message="nothing of the bracket held at the broker",
    )
    wait_for(
        lambda: all(e.status in ("cancelled", "rejected") for e in _ledger_legs().values()),
        timeout=30,
        message="every leg settled in the ledger",
    )
    assert ib_runtime.worker.reconnects == 0
    # Every leg is finished in the ledger, and says why: the refused leg with the broker's word, the others
    # withdrawn with the bracket.
    legs = _ledger_legs()
    assert {ref: (event.status, event.code) for ref, event in legs.items()} == {
        "cut": ("cancelled", "bracket_incomplete"),
        "cut.sl": ("cancelled", "bracket_incomplete"),
        "cut.tp": ("rejected", "201"),
    }
    assert all(event.reason for event in legs.values())
    refused = OrderEvent.objects.filter(order__client_order_id="cut.tp").values_list(
        "status", "source", "code", "reason"
    )
    assert ("rejected", "worker", "201", "Order rejected - reason:The take-profit price is not accepted.") in refused
    tp = api_client.get(f"/api/v1/orders/{Order.objects.get(client_order_id='cut.tp').pk}/").json()
    assert ("201", "Order rejected - reason:The take-profit price is not accepted.") in [
        (event["code"], event["reason"]) for event in tp["events"]
    ]
    assert [o.order_ref for o in resting.received_orders() if not o.what_if] == list(LEGS)  # nothing sent again
    entry = api_client.get(f"/api/v1/orders/{Order.objects.get(client_order_id='cut').pk}/").json()
    assert {entry["status"], *(child["status"] for child in entry["children"] if child["role"] != "take_profit")} == {
        "cancelled"
    }
    assert [child["status"] for child in entry["children"] if child["role"] == "take_profit"] == ["rejected"]
