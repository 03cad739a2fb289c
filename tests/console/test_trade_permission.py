"""Trading needs the `orders.trade` permission and deciding on held orders `orders.approve`: a staff member with
neither may look at what their view permissions show and halt trading, but places, changes, cancels and approves
nothing, at the console or with their session in the browsable API; a risk officer may approve without trading,
a trader trade without approving (against the simulated gateway over real TCP)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from orders import services
from orders.models import Order
from orders.selectors import trading_halted
from orders.types import OrderRequest
from tests.console.conftest import latest_status, resting_limit, sent_refs

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:orders_order_changelist")
LIVE = reverse("admin:ibkrgw_dashboard_live")
ENTRY = {"symbol": "AAPL", "sec_type": "STK", "action": "BUY", "quantity": "1", "order_type": "MKT", "tif": "DAY"}


def test_a_viewer_gets_403_on_every_trading_page_and_nothing_is_sent(
    ib_runtime, sim_gateway, orders_enabled, viewer_client
):
    sim_gateway.pause_market()
    order = resting_limit(sim_gateway, "resting-1")
    position_con_id = 265598  # AAPL in the simulator's universe; the check comes before the position lookup
    pages = [
        reverse("admin:ibkrgw_order_new"),
        reverse("admin:ibkrgw_cancel_all"),
        reverse("admin:ibkrgw_order_cancel", args=[order.pk]),
        reverse("admin:ibkrgw_order_modify", args=[order.pk]),
        reverse("admin:ibkrgw_position_close", args=[position_con_id]),
        reverse("admin:ibkrgw_order_approve_review", args=[order.pk]),
    ]
    for page in pages:
        assert viewer_client.get(page).status_code == 403, page
    posted = [
        (reverse("admin:ibkrgw_order_new"), {**ENTRY, "confirm": "on", "client_order_id": "viewer-1"}),
        (reverse("admin:ibkrgw_cancel_all"), {"confirm": "on"}),
        (reverse("admin:ibkrgw_order_cancel", args=[order.pk]), {"confirm": "on"}),
        (reverse("admin:ibkrgw_order_modify", args=[order.pk]), {"quantity": "2", "confirm": "on"}),
        (reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"}),
        (reverse("admin:ibkrgw_order_reject", args=[order.pk]), {"reason": "no"}),
    ]
    for page, data in posted:
        assert viewer_client.post(page, data).status_code == 403, page
    # The bulk actions are not offered, and posting one anyway changes nothing.
    listing = viewer_client.get(CHANGELIST)
    assert listing.status_code == 200
    assert "cancel_selected" not in listing.content.decode()
    assert "ibkrgw-row-cancel" not in listing.content.decode()
    viewer_client.post(CHANGELIST, {"action": "cancel_selected", "_selected_action": [order.pk], "confirmed": "1"})
    assert Order.objects.count() == 1
    assert latest_status(order) == "submitted"
    assert sent_refs(sim_gateway) == ["resting-1"]


def test_a_viewer_sees_no_trading_buttons_but_can_halt(ib_runtime, sim_gateway, viewer_client, staff_client):
    viewer_page = viewer_client.get(LIVE).content.decode()
    trader_page = staff_client.get(LIVE).content.decode()
    for button in ('id="ibkrgw-new-order"', 'id="ibkrgw-cancel-all"'):
        assert button in trader_page
        assert button not in viewer_page
    assert 'id="ibkrgw-nav-new-order"' not in viewer_client.get(reverse("admin:ibkrgw_dashboard")).content.decode()
    # Stopping is never withheld: any staff member can halt.
    halted = viewer_client.post(reverse("admin:ibkrgw_trading_halt"), {"reason": "viewer stops it", "confirm": "on"})
    assert halted.status_code == 302
    assert trading_halted()


def test_a_viewer_session_cannot_trade_through_the_browsable_api_but_can_halt(
    ib_runtime, sim_gateway, orders_enabled, viewer_client, staff_client, user_client
):
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}
    refused = viewer_client.post("/api/v1/orders/", {**body, "client_order_id": "v-1"}, content_type="application/json")
    assert refused.status_code == 403, refused.content
    assert refused.json()["error"]["code"] == "permission_denied"
    assert viewer_client.get("/api/v1/orders/").status_code == 200  # reading stays open
    placed = staff_client.post("/api/v1/orders/", {**body, "client_order_id": "s-1"}, content_type="application/json")
    assert placed.status_code == 201, placed.content
    assert list(Order.objects.values_list("client_order_id", flat=True)) == ["s-1"]
    # Halting, as on the console, is open to every staff member; a signed-in user who is not staff is refused.
    halt = {"reason": "viewer stops it"}
    assert user_client.post("/api/v1/trading/halt/", halt, content_type="application/json").status_code == 403
    assert not trading_halted()
    halted = viewer_client.post("/api/v1/trading/halt/", halt, content_type="application/json")
    assert halted.status_code == 200, halted.content
    assert trading_halted()


def _held(cid: str) -> Order:
    from ibkrgw.actors import Actor, ActorKind, Source

    placer = Actor(kind=ActorKind.USER, label="someone else", source=Source.REST)
    order = services.order_submit(
        request=OrderRequest(symbol="AAPL", action="BUY", quantity=Decimal(1), order_type="MKT", client_order_id=cid),
        actor=placer,
    ).order
    assert latest_status(order) == "pending_approval"
    return order


def test_an_approver_decides_on_held_orders_without_trading(ib_runtime, sim_gateway, orders_enabled, approver_client):
    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset({"user"})
    order = _held("held-1")
    page = approver_client.get(LIVE).content.decode()
    assert 'id="ibkrgw-review-held-1"' in page
    assert 'id="ibkrgw-new-order"' not in page
    assert approver_client.get(reverse("admin:ibkrgw_order_new")).status_code == 403
    listing = approver_client.get(CHANGELIST).content.decode()
    assert "ibkrgw-row-approve" in listing and "approve_selected" in listing and "cancel_selected" not in listing
    review = approver_client.get(reverse("admin:ibkrgw_order_approve_review", args=[order.pk]))
    assert review.status_code == 200 and 'name="confirm"' in review.content.decode()
    approver_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"})
    assert sent_refs(sim_gateway) == ["held-1"]


def test_a_trader_trades_but_does_not_decide_on_held_orders(ib_runtime, sim_gateway, orders_enabled, trader_client):
    orders_enabled.APPROVAL_REQUIRED_FOR = frozenset({"user"})
    order = _held("held-2")
    page = trader_client.get(LIVE).content.decode()
    assert 'id="ibkrgw-new-order"' in page
    assert 'id="ibkrgw-review-held-2"' not in page and "an operator who may approve decides" in page
    assert trader_client.get(reverse("admin:ibkrgw_order_new")).status_code == 200
    listing = trader_client.get(CHANGELIST).content.decode()
    assert "cancel_selected" in listing and "approve_selected" not in listing and "ibkrgw-row-approve" not in listing
    assert trader_client.get(reverse("admin:ibkrgw_order_approve_review", args=[order.pk])).status_code == 403
    approve = trader_client.post(reverse("admin:ibkrgw_order_approve", args=[order.pk]), {"confirm": "on"})
    assert approve.status_code == 403
    reject = trader_client.post(reverse("admin:ibkrgw_order_reject", args=[order.pk]), {"reason": "no"})
    assert reject.status_code == 403
    assert latest_status(order) == "pending_approval"
    assert sent_refs(sim_gateway) == []


def test_the_upgrade_lets_intact_staff_members_keep_trading_and_no_one_else():
    """orders 0008 introduced the permissions: staff members whose account matches its MAC get both (they could
    trade and approve before), with their MAC made again; one raised to staff behind the gateway's back does not."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from ibkrgw.auth import user_may_approve, user_may_trade
    from ibkrgw.users import user_distrust

    def migrate(targets):
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)

    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    users = get_user_model()
    try:
        migrate([("orders", "0007_approvals_count_index")])
        trader = users.objects.create_user("trader", is_staff=True)
        raised = users.objects.create_user("raised")
        users.objects.filter(pk=raised.pk).update(is_staff=True)  # outside the gateway: its MAC no longer matches
        plain = users.objects.create_user("plain")
    finally:
        migrate(latest)
    assert user_may_trade(users.objects.get(pk=trader.pk))
    assert user_may_approve(users.objects.get(pk=trader.pk))
    assert user_distrust(trader.pk) is None  # still signs in
    assert not users.objects.get(pk=raised.pk).user_permissions.exists()
    assert user_distrust(raised.pk) is not None
    assert not user_may_trade(users.objects.get(pk=plain.pk))
