"""Acting on orders from the console: every action shows what will happen first, then goes through the
same services and gates as the API (against the simulated gateway over real TCP)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from audit import events
from audit.models import AuditEntry
from ibkrgw.errors import GatewayError
from orders import services
from orders.models import Order, OrderEvent
from orders.types import OrderRequest
from tests.conftest import wait_for
from tests.console.conftest import AGENT, resting_limit

pytestmark = pytest.mark.django_db(transaction=True)

NEW = reverse("admin:ibkrgw_order_new")
CHANGELIST = reverse("admin:orders_order_changelist")


def _status(order) -> str:
    return OrderEvent.objects.filter(order=order).order_by("-id").first().status


def _entry(**overrides) -> dict:
    body = {"symbol": "aapl", "sec_type": "STK", "action": "BUY", "quantity": "3", "order_type": "LMT", "tif": "DAY"}
    return {**body, **overrides}


def _hidden(form) -> dict:
    """What the confirmation page posts back: its hidden fields as the browser sends them."""
    return {f.name: ("" if f.value() is None else f.value()) for f in form if f.name != "confirm"}


def _review(client, body: dict):
    response = client.post(NEW, body)
    assert response.status_code == 200
    return response


def test_order_entry_shows_quote_notional_and_margin_then_places_once(
    ib_runtime, sim_gateway, orders_enabled, staff_client
):
    sim_gateway.pause_market()
    last = sim_gateway.quote("AAPL")["last"]
    limit = (last * Decimal("0.98")).quantize(Decimal("0.01"))
    review = _review(staff_client, _entry(limit_price=str(limit)))
    body = review.content.decode()
    context = review.context
    assert "Confirm the order" in body
    assert context["mark"] == last
    assert context["notional"] == (3 * limit).quantize(Decimal("0.01"))
    assert context["init_margin_change"] is not None and 'id="ibkrgw-margin"' in body
    assert context["distance_pct"] == ((limit - last) / last * 100).quantize(Decimal("0.01"))
    assert Order.objects.count() == 0  # a review records nothing
    assert [o for o in sim_gateway.received_orders() if not o.what_if] == []

    place = _hidden(context["form"])
    # Without the box ticked: the confirmation page again, nothing placed.
    again = staff_client.post(NEW, place)
    assert "Tick the box" in again.content.decode()
    assert Order.objects.count() == 0

    placed = staff_client.post(NEW, {**place, "confirm": "on"}, follow=True)
    order = Order.objects.get()
    assert order.client_order_id == place["client_order_id"]
    assert (order.actor_label, order.source, order.limit_price) == ("staff", "admin", limit)
    assert f"Order {order.client_order_id} placed" in placed.content.decode()
    wait_for(lambda: _status(order) == "submitted", message="order working at the broker")
    # Pressing "place" again (same key) places nothing new.
    staff_client.post(NEW, {**place, "confirm": "on"})
    assert Order.objects.count() == 1


def test_order_entry_places_a_bracket(ib_runtime, sim_gateway, orders_enabled, staff_client):
    sim_gateway.pause_market()
    last = sim_gateway.quote("AAPL")["last"]
    tp, sl = (last * Decimal("1.03")).quantize(Decimal("0.01")), (last * Decimal("0.97")).quantize(Decimal("0.01"))
    review = _review(staff_client, _entry(order_type="MKT", take_profit=str(tp), stop_loss=str(sl)))
    assert "Bracket:" in review.content.decode()
    place = _hidden(review.context["form"])
    staff_client.post(NEW, {**place, "confirm": "on"})
    entry = Order.objects.get(role="entry")
    roles = dict(Order.objects.filter(parent=entry).values_list("role", "limit_price"))
    assert set(roles) == {"take_profit", "stop_loss"} and roles["take_profit"] == tp


def test_order_entry_reports_a_gate_block_on_the_form(ib_runtime, sim_gateway, staff_client, settings):
    settings.RISK_MAX_ORDER_QUANTITY = 5
    place = {**_entry(quantity="50", order_type="MKT"), "client_order_id": "op-too-big", "confirm": "on"}
    response = staff_client.post(NEW, place, follow=True)
    assert Order.objects.count() == 0
    assert "New order" in response.content.decode()
    assert AuditEntry.objects.filter(event=events.GATE_BLOCKED, actor_label="staff", source="admin").exists()


def test_cancel_from_the_row_and_the_order_page(ib_runtime, sim_gateway, orders_enabled, staff_client):
    sim_gateway.pause_market()
    order = resting_limit(sim_gateway, "row-cancel")
    cancel_url = reverse("admin:ibkrgw_order_cancel", args=[order.pk])
    assert cancel_url in staff_client.get(CHANGELIST).content.decode()  # a link in the order's row
    assert cancel_url in staff_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    page = staff_client.get(cancel_url)
    assert "Yes, cancel the order" in page.content.decode() and page.context["quote"] is not None
    assert _status(order) == "submitted"  # showing the page changes nothing
    staff_client.post(cancel_url)
    wait_for(lambda: _status(order) == "cancelled", message="cancelled at the broker")


def test_modify_shows_before_and_after_then_changes_the_limit(ib_runtime, sim_gateway, orders_enabled, staff_client):
    sim_gateway.pause_market()
    order = resting_limit(sim_gateway, "row-modify", qty="2")
    url = reverse("admin:ibkrgw_order_modify", args=[order.pk])
    new_limit = (order.limit_price - Decimal("0.5")).quantize(Decimal("0.01"))
    review = staff_client.post(url, {"limit_price": str(new_limit)})
    assert review.context["after"]["notional"] == (2 * new_limit).quantize(Decimal("0.01"))
    assert services.order_terms(order)["limit_price"] == order.limit_price  # not yet
    staff_client.post(url, {"limit_price": str(new_limit), "confirm": "on"})
    assert services.order_terms(Order.objects.get(pk=order.pk))["limit_price"] == new_limit


def test_cancel_all_confirms_then_cancels_every_open_order(ib_runtime, sim_gateway, orders_enabled, staff_client):
    sim_gateway.pause_market()
    orders = [resting_limit(sim_gateway, f"all-{i}") for i in range(2)]
    url = reverse("admin:ibkrgw_cancel_all")
    page = staff_client.get(url).content.decode()
    assert "all-0" in page and "all-1" in page
    staff_client.post(url, {})  # not confirmed
    assert [_status(o) for o in orders] == ["submitted", "submitted"]
    staff_client.post(url, {"confirm": "on"})
    for order in orders:
        wait_for(lambda o=order: _status(o) == "cancelled", message="cancelled")


def test_close_position_confirms_then_flattens_it(ib_runtime, sim_gateway, orders_enabled, staff_client):
    bought = services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(4), order_type="MKT"), actor=AGENT
    ).order
    wait_for(lambda: _status(bought) == "filled", message="buy filled")
    con_id = bought.con_id
    wait_for(lambda: sim_gateway.positions().get(con_id) == 4, message="position of 4")
    dashboard = staff_client.get(reverse("admin:ibkrgw_dashboard")).content.decode()
    url = reverse("admin:ibkrgw_position_close", args=[con_id])
    assert url in dashboard
    page = staff_client.get(url)
    assert page.context["order_request"].action == "SELL" and page.context["order_request"].quantity == 4
    assert page.context["notional"] is not None
    form = page.context["form"]
    staff_client.post(url, {"client_order_id": form["client_order_id"].value(), "quantity": "4", "confirm": "on"})
    wait_for(lambda: not sim_gateway.positions().get(con_id), message="position closed")


def test_every_console_page_has_the_status_header_and_view_site_opens_the_docs(ib_runtime, staff_client):
    for url in (CHANGELIST, reverse("admin:orders_fill_changelist"), reverse("admin:index"), NEW):
        body = staff_client.get(url).content.decode()
        assert 'id="ibkrgw-statusbar"' in body, url
        assert 'id="ibkrgw-header-gateway">connected<' in body, url
        assert ">done<" in body  # reconciliation
        assert "SIMULATED" in body  # orders not armed
    assert 'href="/api/docs/"' in staff_client.get(reverse("admin:index")).content.decode()
    assert staff_client.get(reverse("admin:ibkrgw_status")).json()["gateway"] == "connected"


def test_csv_export_of_orders_follows_the_list_filter_and_defuses_formulas(ib_runtime, staff_client):
    services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal("2.5"), order_type="MKT"), actor=AGENT
    )
    services.order_submit(
        request=OrderRequest(symbol="MSFT", action="SELL", quantity=Decimal(1), order_type="MKT"), actor=AGENT
    )
    listing = staff_client.get(CHANGELIST, {"q": "AAPL"}).content.decode()
    export = reverse("admin:orders_order_export_csv")
    assert f"{export}?q=AAPL" in listing
    response = staff_client.get(export, {"q": "AAPL"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["symbol"], r["quantity"], r["current_status"]) for r in rows] == [("AAPL", "2.5", "simulated")]
    audit = b"".join(staff_client.get(reverse("admin:audit_auditentry_export_csv")).streaming_content).decode()
    assert "order.simulated" in audit and "entry_hash" in audit.splitlines()[0]
    fills = staff_client.get(reverse("admin:orders_fill_export_csv"))
    assert b"".join(fills.streaming_content).decode().startswith("executed_at,exec_id")


def test_audit_list_shows_block_codes(ib_runtime, staff_client, settings):
    settings.RISK_MAX_ORDER_QUANTITY = 5
    with pytest.raises(GatewayError):
        services.order_submit(
            request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(50), order_type="MKT"), actor=AGENT
        )
    body = staff_client.get(reverse("admin:audit_auditentry_changelist")).content.decode()
    code = AuditEntry.objects.get(event=events.GATE_BLOCKED).data["code"]
    assert f'ibkrgw-status-rejected">{code}<' in body


def test_dashboard_shows_the_chain_check_and_a_consistent_account(
    ib_runtime, sim_gateway, orders_enabled, staff_client
):
    bought = services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(10), order_type="MKT"), actor=AGENT
    ).order
    wait_for(lambda: _status(bought) == "filled", message="buy filled")
    wait_for(lambda: sim_gateway.positions().get(bought.con_id) == 10, message="position")
    response = staff_client.post(reverse("admin:ibkrgw_chain_verify"), follow=True)
    assert "Audit chain intact" in response.content.decode()
    context = staff_client.get(reverse("admin:ibkrgw_dashboard")).context
    assert context["chain"]["ok"] and context["chain"]["entries"] == AuditEntry.objects.count()
    account = context["account"]
    rows = account["positions"]
    assert rows and all(r.mark is not None for r in rows)
    # One set of marks: the rows add up to the card, and net liquidation is cash plus the positions.
    assert sum(r.unrealized_pnl for r in rows) == account["pnl"]["unrealized"]
    assert account["net_liquidation"] == account["figures"]["cash"] + sum(r.market_value for r in rows)
    for name in ("buying_power", "cash", "init_margin", "maint_margin"):
        assert account["figures"][name] is not None
    body = staff_client.get(reverse("admin:ibkrgw_dashboard")).content.decode()
    assert 'id="ibkrgw-chain-status" class="ibkrgw-ok">intact' in body


def test_approval_review_shows_context_and_a_countdown(ib_runtime, approval_for_agents, staff_client):
    order = services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(3), order_type="MKT", client_order_id="rv"),
        actor=AGENT,
    ).order
    page = staff_client.get(reverse("admin:ibkrgw_order_approve_review", args=[order.pk]))
    item = page.context["item"]
    assert item["quote"] is not None and item["notional"] == (3 * item["mark"]).quantize(Decimal("0.01"))
    assert 0 < item["expires_in_s"] <= approval_for_agents.APPROVAL_TTL_S
    body = page.content.decode()
    assert 'class="ibkrgw-countdown" data-expires=' in body and 'name="confirm"' in body
    assert _status(order) == "pending_approval"


@pytest.mark.parametrize("target", ["https://evil.example/admin/login/", "//evil.example/", "http://evil.example"])
def test_cancelling_never_sends_the_operator_to_another_site(staff_client, target):
    from tests.factories import OrderEventFactory

    order = OrderEventFactory(status="submitted", broker_order_id=41).order
    url = reverse("admin:ibkrgw_order_cancel", args=[order.pk])
    page = staff_client.get(url, {"next": target}).content.decode()
    assert "evil.example" not in page
    # Before: after the operator confirmed, the console redirected to the link's `next`, on any site.
    response = staff_client.post(url, {"next": target})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:orders_order_change", args=[order.pk])
    dashboard = reverse("admin:ibkrgw_dashboard")
    assert staff_client.post(url, {"next": dashboard})["Location"] == dashboard


def test_the_placer_of_a_held_order_is_sent_to_another_person_to_approve_it(
    ib_runtime, orders_enabled, staff_client, superuser_client, sim_gateway
):
    from ibkrgw.actors import Actor, ActorKind, Source

    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset({"user"})
    staff = Actor(kind=ActorKind.USER, label="staff", source=Source.REST)
    order = services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(1), order_type="MKT", client_order_id="4e"),
        actor=staff,
    ).order
    live = reverse("admin:ibkrgw_dashboard_live")
    assert 'id="ibkrgw-own-4e"' in staff_client.get(live).content.decode()
    assert 'id="ibkrgw-review-4e"' in superuser_client.get(live).content.decode()
    review = reverse("admin:ibkrgw_order_approve_review", args=[order.pk])
    own = staff_client.get(review).content.decode()
    assert 'id="ibkrgw-approve-own"' in own and 'name="confirm"' not in own
    # Posting the approval anyway: refused with the reason, nothing sent.
    page = staff_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"}, follow=True)
    assert "another user must approve it" in page.content.decode()
    assert _status(order) == "pending_approval"
    assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == []
    # Another operator sees the approve form and sends it.
    assert 'name="confirm"' in superuser_client.get(review).content.decode()
    superuser_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"})
    assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == ["4e"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", "\u0661"),  # ARABIC-INDIC DIGIT ONE: Django's field reads it as 1
        ("quantity", "\uff13"),  # FULLWIDTH DIGIT THREE
        ("limit_price", "\u0661\u0668\u0667"),
        ("symbol", "\u2028AAPL"),  # Django trims any Unicode space: this was AAPL
        ("symbol", "AAPL\u3000"),
        ("expiry", "\u0662\u0660\u0662\u0666\u0661\u0662"),
    ],
)
def test_order_entry_takes_numbers_and_symbols_as_the_rest_api_does(staff_client, field, value):
    """The console's order form holds input to the REST API's alphabet: digits of another script or a symbol
    wrapped in Unicode spaces are refused on the form, not read as something the operator did not type."""
    response = staff_client.post(NEW, {**_entry(limit_price="180"), field: value})
    assert response.status_code == 200
    form = response.context["form"]
    assert field in form.errors, form.errors
    assert Order.objects.count() == 0


def test_the_confirmation_of_an_order_the_gates_would_refuse_does_not_say_it_will_be_sent(
    ib_runtime, sim_gateway, orders_enabled, staff_client, settings
):
    settings.RISK_MAX_ORDER_QUANTITY = 5
    page = _review(staff_client, _entry(quantity="50", order_type="MKT")).content.decode()
    assert "risk_max_quantity" in page
    assert "will be sent to the gateway" not in page
    assert "The gates would refuse this order now" in page
    fine = _review(staff_client, _entry(quantity="1", order_type="MKT")).content.decode()
    assert "Orders are armed: this order will be sent to the gateway." in fine
