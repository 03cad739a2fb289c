"""Placing orders through REST and every gate, against the simulated gateway over real TCP."""

import os
import threading
from decimal import Decimal

import pytest
from django.db import connection

from audit.models import AuditEntry
from orders.models import Fill, Order, OrderEvent
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _order(**overrides):
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "10", "order_type": "MKT", "tif": "DAY"}
    body.update(overrides)
    return body


def _status(api_client, order_id):
    return api_client.get(f"/api/v1/orders/{order_id}/").json()["status"]


def test_default_settings_record_a_simulated_order_and_send_nothing(ib_runtime, api_client, sim_gateway):
    response = api_client.post("/api/v1/orders/", _order(client_order_id="sim-1"), format="json")
    assert response.status_code == 201, response.content
    order = response.json()
    assert order["status"] == "simulated"
    assert order["client_order_id"] == "sim-1"
    # What the gates checked it against; no what-if either: the broker hears nothing of a simulated order.
    checked = order["preview"]
    assert Decimal(checked["notional"]) == Decimal(order["quantity"]) * Decimal(checked["reference_price"])
    assert order["events"][0]["status"] == "simulated"
    assert sim_gateway.received_orders() == []
    assert AuditEntry.objects.filter(event="order.simulated", target_id=order["id"]).count() == 1


@pytest.mark.parametrize(
    "body",
    [
        _order(client_order_id="same-1"),
        _order(client_order_id="same-2", order_type="LMT", limit_price="185.10", quantity="2.50"),
        _order(
            client_order_id="same-3", order_type="LMT", limit_price="185.00", take_profit="195.0", stop_loss="181.00"
        ),
    ],
    ids=["market", "limit", "bracket"],
)
def test_the_answer_to_a_placed_order_is_what_reading_it_back_gives(ib_runtime, api_client, body):
    placed = api_client.post("/api/v1/orders/", body, format="json")
    assert placed.status_code == 201, placed.content
    read = api_client.get(f"/api/v1/orders/{placed.json()['id']}/")
    assert placed.json() == read.json()
    replayed = api_client.post("/api/v1/orders/", body, format="json")
    assert (replayed.status_code, replayed.json()) == (200, read.json())


def test_market_order_fills_and_the_position_follows(ib_runtime, api_client, sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    response = api_client.post("/api/v1/orders/", _order(client_order_id="mkt-1"), format="json")
    assert response.status_code == 201, response.content
    order_id = response.json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "filled", message="MKT filled")
    order = api_client.get(f"/api/v1/orders/{order_id}/").json()
    assert Decimal(order["filled_quantity"]) == 10
    assert order["broker_order_id"] is not None
    assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == ["mkt-1"]
    wait_for(lambda: Fill.objects.filter(order_id=order_id).exists(), message="fill recorded")
    fill = api_client.get("/api/v1/fills/", {"order_id": order_id}).json()["results"][0]
    assert Decimal(fill["quantity"]) == 10
    assert fill["side"] == "BOT"
    wait_for(
        lambda: api_client.get("/api/v1/fills/", {"order_id": order_id}).json()["results"][0]["commission"],
        message="commission recorded",
    )
    assert sim_gateway.positions()[265598] == Decimal(10)


def test_limit_order_rests_then_fills_when_the_price_crosses(ib_runtime, api_client, sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    response = api_client.post(
        "/api/v1/orders/", _order(client_order_id="lmt-1", order_type="LMT", limit_price="185.00"), format="json"
    )
    assert response.status_code == 201, response.content
    order_id = response.json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    sim_gateway.set_price("AAPL", Decimal("184.50"))
    wait_for(lambda: _status(api_client, order_id) == "filled", message="LMT filled")
    fill = Fill.objects.get(order_id=order_id)
    assert fill.price <= Decimal("185.00")


def test_the_connection_knows_the_permanent_id_the_broker_reported(ib_runtime, api_client, sim_gateway, orders_enabled):
    # What the acknowledgement records when the broker's first report came before it was written.
    from brokers import runtime

    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    body = _order(client_order_id="perm-1", order_type="LMT", limit_price="185.00")
    order_id = api_client.post("/api/v1/orders/", body, format="json").json()["id"]
    wait_for(lambda: OrderEvent.objects.filter(order_id=order_id, perm_id__isnull=False).exists(), message="perm id")
    (received,) = [o for o in sim_gateway.received_orders() if o.order_ref == "perm-1"]
    broker_order_id = api_client.get(f"/api/v1/orders/{order_id}/").json()["broker_order_id"]
    assert runtime.adapter().order_perm_id(broker_order_id=broker_order_id) == received.perm_id is not None
    assert runtime.adapter().order_perm_id(broker_order_id=broker_order_id + 1000) is None


def test_stop_order_triggers(ib_runtime, api_client, sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    sim_gateway.set_price("MSFT", Decimal("420.00"))
    response = api_client.post(
        "/api/v1/orders/",
        _order(symbol="MSFT", action="SELL", client_order_id="stp-1", order_type="STP", stop_price="410.00"),
        format="json",
    )
    assert response.status_code == 201, response.content
    order_id = response.json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="stop resting")
    sim_gateway.set_price("MSFT", Decimal("409.00"))
    wait_for(lambda: _status(api_client, order_id) == "filled", message="STP triggered")


def test_cancel_works(ib_runtime, api_client, sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    order_id = api_client.post(
        "/api/v1/orders/", _order(client_order_id="cx-1", order_type="LMT", limit_price="181.00"), format="json"
    ).json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    response = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    assert response.status_code == 200, response.content
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="cancelled")
    assert [c.order_id for c in sim_gateway.received_cancels()] != []
    statuses = list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("status", flat=True))
    assert statuses[:2] == ["pending_submit", "submitted"]
    assert "cancel_pending" in statuses
    assert statuses[-1] == "cancelled"
    # Cancelling a cancelled order again is idempotent: the order as it is, and nothing more sent.
    cancels = len(sim_gateway.received_cancels())
    again = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    assert again.status_code == 200, again.content
    assert again.json()["status"] == "cancelled"
    assert len(sim_gateway.received_cancels()) == cancels


def test_partial_fills_add_up(ib_runtime, api_client, sim_gateway, settings, orders_enabled):
    settings.RISK_MAX_ORDER_NOTIONAL = Decimal("10000000")
    sim_gateway.pause_market()
    response = api_client.post("/api/v1/orders/", _order(client_order_id="big-1", quantity="900"), format="json")
    assert response.status_code == 201, response.content
    order_id = response.json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "filled", timeout=20, message="all partial fills")
    fills = Fill.objects.filter(order_id=order_id)
    assert fills.count() > 1
    assert sum(f.quantity for f in fills) == Decimal(900)
    statuses = list(OrderEvent.objects.filter(order_id=order_id).values_list("status", flat=True))
    assert "partially_filled" in statuses


def test_modify_changes_the_working_order(ib_runtime, api_client, sim_gateway, orders_enabled):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    order_id = api_client.post(
        "/api/v1/orders/", _order(client_order_id="mod-1", order_type="LMT", limit_price="182.00"), format="json"
    ).json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    response = api_client.patch(
        f"/api/v1/orders/{order_id}/", {"limit_price": "183.00", "quantity": "5"}, format="json"
    )
    assert response.status_code == 200, response.content
    # The order shows the terms in force; the change is one of its events.
    assert (response.json()["quantity"], response.json()["limit_price"]) == ("5", "183")
    wait_for(
        lambda: any(o.lmt_price == Decimal("183.00") for o in sim_gateway.received_orders()),
        message="modify reached the gateway",
    )
    order = api_client.get(f"/api/v1/orders/{order_id}/").json()
    assert (order["quantity"], order["limit_price"], order["stop_price"]) == ("5", "183", None)
    changes = [e["data"]["modified"] for e in order["events"] if e["data"].get("modified")]
    assert [(Decimal(c["quantity"]), Decimal(c["limit_price"]), c["stop_price"]) for c in changes] == [
        (5, Decimal("183"), None)
    ]
    listed = api_client.get("/api/v1/orders/?limit=5").json()["results"]
    assert [(o["quantity"], o["limit_price"]) for o in listed if o["id"] == order_id] == [("5", "183")]


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (_order(order_type="LMT"), "invalid_order", 422),  # no limit price
        (_order(limit_price="190.00"), "invalid_order", 422),  # MKT with a price
        (_order(order_type="MOC", tif="GTC"), "invalid_order", 422),  # MOC must be DAY
        (_order(order_type="LMT", limit_price="190.001"), "invalid_tick_size", 422),  # tick size
        (_order(quantity="5000"), "risk_max_quantity", 422),  # max quantity
        (_order(quantity="900"), "risk_max_notional", 422),  # 900 x ~190 > 100k
        (_order(order_type="LMT", limit_price="150.00"), "risk_price_collar", 422),  # far from market
        (_order(symbol="NOPE123"), "contract_not_found", 404),
        (_order(symbol="SHOP"), "contract_ambiguous", 409),
        (_order(account="DU999"), "account_not_managed", 422),
    ],
)
def test_every_gate_blocks_with_its_code_and_nothing_is_sent(
    ib_runtime, api_client, sim_gateway, orders_enabled, body, code, status
):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    response = api_client.post("/api/v1/orders/", body, format="json")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []
    assert Order.objects.count() == 0
    if code not in ("contract_not_found", "contract_ambiguous"):
        entry = AuditEntry.objects.get(event="gate.blocked")
        assert entry.data["code"] == code


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_order(order_type="MOC", tif="GTC"), "MOC orders must have tif DAY."),
        (_order(order_type="LOC", limit_price="189.00", tif="GTC"), "LOC orders must have tif DAY."),
        (_order(order_type="MOC", tif="OPG"), "MOC orders must have tif DAY."),
        (
            _order(order_type="STP", stop_price="195.00", tif="OPG"),
            "tif OPG is only for MKT and LMT orders (market/limit on open).",
        ),
    ],
    ids=["MOC GTC", "LOC GTC", "MOC OPG", "STP OPG"],
)
def test_auction_orders_ib_would_refuse_for_their_tif_are_refused_before_the_broker(
    ib_runtime, api_client, sim_gateway, orders_enabled, body, message
):
    # IB rejects these (error 113 for MOC/LOC not DAY, 111 for OPG with another type than MKT or LMT):
    # the gateway refuses them itself, with its own stable code, and sends nothing.
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    response = api_client.post("/api/v1/orders/", body, format="json")
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert (error["code"], error["message"], error["details"]) == (
        "invalid_order",
        message,
        {"gate": "validation", "field": "tif"},
    )
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []
    assert Order.objects.count() == 0


def test_account_mode_mismatch_blocks(ib_runtime, api_client, sim_gateway, settings):
    settings.TRADING_MODE = "live"
    settings.ORDERS_ENABLED = True
    settings.LIVE_TRADING_OVERRIDE_FILE = None
    response = api_client.post("/api/v1/orders/", _order(), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_mode_mismatch"
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []


def test_live_needs_the_override_file_at_the_moment_of_each_order(
    ib_runtime, api_client, sim_gateway, settings, tmp_path
):
    # The simulated account is DU...: pretend it is live so only the arming gate decides.
    settings.TRADING_MODE = "live"
    settings.ORDERS_ENABLED = True
    override = tmp_path / "ARMED"
    settings.LIVE_TRADING_OVERRIDE_FILE = str(override)
    from orders import gates

    original = gates.PAPER_ACCOUNT_PREFIXES
    gates.PAPER_ACCOUNT_PREFIXES = ("XX",)
    try:
        blocked = api_client.post("/api/v1/orders/", _order(client_order_id="live-1"), format="json")
        assert blocked.status_code == 403
        assert blocked.json()["error"]["code"] == "live_override_missing"
        override.write_text("armed")
        sent = api_client.post("/api/v1/orders/", _order(client_order_id="live-2"), format="json")
        assert sent.status_code == 201, sent.content
        os.remove(override)
        again = api_client.post("/api/v1/orders/", _order(client_order_id="live-3"), format="json")
        assert again.status_code == 403
        assert again.json()["error"]["code"] == "live_override_missing"
    finally:
        gates.PAPER_ACCOUNT_PREFIXES = original
    assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == ["live-2"]


def test_rate_limit_is_counted_in_the_database(ib_runtime, api_client, settings):
    settings.RISK_MAX_ORDERS_PER_MINUTE = 2
    for i in range(2):
        assert api_client.post("/api/v1/orders/", _order(client_order_id=f"r-{i}"), format="json").status_code == 201
    response = api_client.post("/api/v1/orders/", _order(client_order_id="r-3"), format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "risk_rate_limit"


def test_identical_order_without_key_is_a_possible_duplicate(ib_runtime, api_client):
    assert api_client.post("/api/v1/orders/", _order(), format="json").status_code == 201
    response = api_client.post("/api/v1/orders/", _order(), format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "possible_duplicate"


def test_stale_market_data_blocks(ib_runtime, api_client, sim_gateway, settings, orders_enabled):
    # The gateway answers with a real quote, but with a freshness limit of zero every quote (cached or
    # snapshot) is already older than allowed when the gate reads it.
    settings.QUOTE_STALE_AFTER_S = 0
    response = api_client.post("/api/v1/orders/", _order(client_order_id="stale-1"), format="json")
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "risk_stale_market_data"
    assert error["details"] == {"gate": "risk", "stale_after_s": 0}
    assert Order.objects.count() == 0
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []
    blocked = AuditEntry.objects.get(event="gate.blocked")
    assert blocked.data["code"] == "risk_stale_market_data"
    assert blocked.data["request"]["symbol"] == "AAPL"


def test_same_key_same_body_replays_and_different_body_is_rejected(ib_runtime, api_client):
    first = api_client.post("/api/v1/orders/", _order(client_order_id="idem-1"), format="json")
    assert first.status_code == 201
    replay = api_client.post("/api/v1/orders/", _order(client_order_id="idem-1"), format="json")
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    header = api_client.post("/api/v1/orders/", _order(), format="json", HTTP_IDEMPOTENCY_KEY="idem-1")
    assert header.json()["id"] == first.json()["id"]
    different = api_client.post("/api/v1/orders/", _order(client_order_id="idem-1", quantity="11"), format="json")
    assert different.status_code == 422
    assert different.json()["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1


def test_twenty_concurrent_posts_with_one_key_create_one_order(ib_runtime, sim_gateway, orders_enabled, settings):
    from rest_framework.test import APIClient

    from ibkrgw.models import ScopedAPIKey

    _, key = ScopedAPIKey.objects.create_key(name="conc", scope="trade")
    sim_gateway.pause_market()
    results: list = []
    barrier = threading.Barrier(20)

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        barrier.wait()
        try:
            results.append(client.post("/api/v1/orders/", _order(client_order_id="conc-1"), format="json"))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 20
    assert {r.status_code for r in results} <= {200, 201}, [r.content for r in results if r.status_code >= 300]
    assert sorted(r.status_code for r in results).count(201) == 1
    assert len({r.json()["id"] for r in results}) == 1
    assert Order.objects.count() == 1
    wait_for(lambda: Fill.objects.exists(), message="the one order filled")
    assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == ["conc-1"]


def test_halt_cancels_open_orders_and_blocks_new_ones_until_an_admin_resumes(
    ib_runtime, api_client, admin_client, sim_gateway, orders_enabled
):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    order_id = api_client.post(
        "/api/v1/orders/", _order(client_order_id="h-1", order_type="LMT", limit_price="182.00"), format="json"
    ).json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    halt = api_client.post("/api/v1/trading/halt/", {"reason": "test"}, format="json")
    assert halt.status_code == 200
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="global cancel")
    blocked = api_client.post("/api/v1/orders/", _order(client_order_id="h-2"), format="json")
    assert blocked.status_code == 423
    assert blocked.json()["error"]["code"] == "trading_halted"
    # An API key can never release the kill switch; an admin user can.
    refused = api_client.post("/api/v1/trading/resume/", {}, format="json")
    assert refused.status_code in (401, 403)
    assert admin_client.post("/api/v1/trading/resume/", {}, format="json").status_code == 200
    assert api_client.post("/api/v1/orders/", _order(client_order_id="h-3"), format="json").status_code == 201
    assert AuditEntry.objects.filter(event="trading.halted").count() == 1
    assert AuditEntry.objects.filter(event="trading.resumed").count() == 1


def test_read_key_cannot_place_orders(ib_runtime, read_client):
    response = read_client.post("/api/v1/orders/", _order(), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_preview_returns_commission_and_margin_without_recording(ib_runtime, api_client, sim_gateway):
    response = api_client.post("/api/v1/orders/preview/", _order(), format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert Decimal(body["commission"]) > 0
    assert Decimal(body["init_margin_change"]) > 0
    assert Order.objects.count() == 0
    assert all(o.what_if for o in sim_gateway.received_orders())
    # Previews carry no orderRef: reconciliation can never take one for a real order.
    assert {o.order_ref for o in sim_gateway.received_orders()} == {""}


def test_orders_are_refused_until_reconciliation_has_run(ib_runtime, api_client, orders_enabled):
    ib_runtime.worker.reconciled.clear()
    response = api_client.post("/api/v1/orders/", _order(client_order_id="rec-1"), format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "broker_unavailable"
    assert Order.objects.count() == 0


def test_an_order_placed_through_another_ib_connection_is_not_cancelled_by_id(
    ib_runtime, api_client, sim_gateway, orders_enabled
):
    # Order ids are per IB client id: cancelling "order 5" from another connection would hit the wrong order.
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    order_id = api_client.post(
        "/api/v1/orders/", _order(client_order_id="other-1", order_type="LMT", limit_price="182.00"), format="json"
    ).json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    ib_runtime.worker.client_id = 99  # this process now speaks as another IB client
    try:
        response = api_client.post(f"/api/v1/orders/{order_id}/cancel/")
    finally:
        ib_runtime.worker.client_id = 1
    assert response.status_code == 409
    assert response.json()["error"]["details"]["client_id"] == 1
    assert sim_gateway.received_cancels() == []
    assert _status(api_client, order_id) == "submitted"


def test_a_malformed_idempotency_key_header_is_400(ib_runtime, api_client):
    response = api_client.post("/api/v1/orders/", _order(), format="json", HTTP_IDEMPOTENCY_KEY="x" * 200)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert Order.objects.count() == 0


def test_naming_the_default_account_or_leaving_it_out_is_the_same_order(ib_runtime, api_client):
    first = api_client.post("/api/v1/orders/", _order(client_order_id="acct-1"), format="json")
    again = api_client.post("/api/v1/orders/", _order(client_order_id="acct-1", account="DU1234567"), format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_with_orders_disabled_a_working_order_cannot_be_modified_but_can_be_cancelled(
    ib_runtime, api_client, sim_gateway, settings
):
    settings.ORDERS_ENABLED = True
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    order_id = api_client.post(
        "/api/v1/orders/", _order(client_order_id="dis-1", order_type="LMT", limit_price="182.00"), format="json"
    ).json()["id"]
    wait_for(lambda: _status(api_client, order_id) == "submitted", message="resting")
    settings.ORDERS_ENABLED = False  # disarmed: nothing new may reach the gateway
    modify = api_client.patch(f"/api/v1/orders/{order_id}/", {"limit_price": "183.00"}, format="json")
    assert modify.status_code == 409
    assert not any(o.lmt_price == Decimal("183.00") for o in sim_gateway.received_orders())
    # Taking risk off is always allowed.
    assert api_client.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 200
    wait_for(lambda: _status(api_client, order_id) == "cancelled", message="cancelled while disarmed")


@pytest.mark.parametrize(
    "body",
    [
        _order(client_order_id="sent-1", order_type="LMT", limit_price="182.00"),
        _order(
            client_order_id="sent-2", order_type="LMT", limit_price="182.00", take_profit="195.00", stop_loss="181.00"
        ),
    ],
    ids=["limit", "bracket"],
)
def test_the_answer_to_a_sent_order_is_what_reading_it_back_gives(
    ib_runtime, api_client, sim_gateway, orders_enabled, body
):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))  # the entry rests: its status does not change
    placed = api_client.post("/api/v1/orders/", body, format="json")
    assert placed.status_code == 201, placed.content
    answer = placed.json()
    assert answer["status"] == "submitted" and answer["broker_order_id"] is not None
    read = api_client.get(f"/api/v1/orders/{answer['id']}/").json()
    # The broker's own report of the order (with its permanent id) may be recorded after the answer: the
    # ledger only appends, so the answer's events come first, unchanged, and everything else is equal.
    assert read["events"][: len(answer["events"])] == answer["events"]
    assert {**read, "events": None} == {**answer, "events": None}


def test_a_filled_order_read_with_compiled_reads_is_the_order_the_queryset_reads(
    ib_runtime, api_client, sim_gateway, orders_enabled
):
    from orders.payloads import order_payload
    from orders.selectors import order_get, order_row, order_with_rows

    sim_gateway.pause_market()
    ids = [
        api_client.post("/api/v1/orders/", _order(client_order_id="rows-1", quantity="3"), format="json").json()["id"],
        api_client.post(
            "/api/v1/orders/",
            _order(client_order_id="rows-2", take_profit="195.00", stop_loss="181.00"),
            format="json",
        ).json()["id"],
    ]
    for order_id in ids:
        wait_for(lambda order_id=order_id: _status(api_client, order_id) == "filled", message="filled")
    wait_for(lambda: Fill.objects.filter(commission__isnull=False).count() == 2, message="commissions recorded")
    for order_id in ids:
        expected = order_payload(order_get(order_id=order_id))
        assert expected["fills"] and expected["fills"][0]["commission"] is not None
        assert order_payload(order_with_rows(order_row(order_id))) == expected
    bracket = order_payload(order_with_rows(order_row(ids[1])))
    assert [child["role"] for child in bracket["children"]] == ["stop_loss", "take_profit"]
    assert {child["status"] for child in bracket["children"]} == {"submitted"}
