"""Every ledger page of the admin renders for staff and is refused to everybody else; data stays read-only."""

from __future__ import annotations

import csv
import html
import io
import re
from decimal import Decimal

import pytest
from django.urls import reverse

from orders.models import OrderStatus
from tests.factories import (
    CommissionFactory,
    FillFactory,
    OrderEventFactory,
    OrderFactory,
    TradingSwitchEventFactory,
    audit_entry,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger():
    event = OrderEventFactory(status=OrderStatus.SUBMITTED)
    fill = FillFactory(order=event.order)
    commission = CommissionFactory(fill=fill)
    switch = TradingSwitchEventFactory()
    entry = audit_entry()
    return {
        "orders_order": event.order.pk,
        "orders_orderevent": event.pk,
        "orders_fill": fill.pk,
        "orders_commission": commission.pk,
        "orders_tradingswitchevent": switch.pk,
        "audit_auditentry": entry.pk,
    }


def _pages(ledger):
    for name, pk in ledger.items():
        yield reverse(f"admin:{name}_changelist")
        yield reverse(f"admin:{name}_change", args=[pk])


@pytest.mark.parametrize("who", ["staff_client", "superuser_client"])
def test_ledger_pages_render_for_staff(request, who, ledger):
    client = request.getfixturevalue(who)
    for url in _pages(ledger):
        assert client.get(url).status_code == 200, url


def test_ledger_pages_are_refused_to_non_staff_and_anonymous(client, user_client, ledger):
    for who in (client, user_client):
        for url in _pages(ledger):
            response = who.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login"))


def test_ledger_rows_cannot_be_added_changed_or_deleted(superuser_client, ledger):
    order_id = ledger["orders_order"]
    assert superuser_client.get(reverse("admin:orders_order_add")).status_code == 403
    assert superuser_client.get(reverse("admin:orders_order_delete", args=[order_id])).status_code == 403
    change = superuser_client.get(reverse("admin:orders_order_change", args=[order_id]))
    assert 'name="_save"' not in change.content.decode()


def test_order_list_shows_and_filters_by_current_status(staff_client):
    filled = OrderEventFactory(status=OrderStatus.FILLED).order
    simulated = OrderEventFactory(status=OrderStatus.SIMULATED).order
    url = reverse("admin:orders_order_changelist")
    body = staff_client.get(url).content.decode()
    assert "ibkrgw-status-filled" in body and "ibkrgw-status-simulated" in body

    body = staff_client.get(url, {"status": "filled"}).content.decode()
    assert filled.client_order_id in body
    assert simulated.client_order_id not in body


def test_order_page_shows_the_timeline_and_the_fills(staff_client):
    event = OrderEventFactory(status=OrderStatus.FILLED)
    FillFactory(order=event.order, exec_id="exec-inline-1")
    body = staff_client.get(reverse("admin:orders_order_change", args=[event.order.pk])).content.decode()
    assert "exec-inline-1" in body
    assert "filled" in body


def test_order_actions_are_offered_but_not_delete(staff_client):
    OrderEventFactory(status=OrderStatus.SIMULATED)
    body = staff_client.get(reverse("admin:orders_order_changelist")).content.decode()
    for action in ("cancel_selected", "approve_selected", "reject_selected"):
        assert f'value="{action}"' in body
    assert 'value="delete_selected"' not in body


def test_lists_and_pages_show_plain_decimals_and_times_with_seconds_and_zone(staff_client):
    event = OrderEventFactory(status=OrderStatus.FILLED)
    order = event.order
    FillFactory(order=order, exec_id="exec-readable", quantity=Decimal("10"), price=Decimal("190.5"))
    for url in (
        reverse("admin:orders_order_changelist"),
        reverse("admin:orders_order_change", args=[order.pk]),
        reverse("admin:orders_fill_changelist"),
        reverse("admin:orders_orderevent_changelist"),
    ):
        body = staff_client.get(url).content.decode()
        assert not re.search(r"\d\.\d*0000\b", body), url  # no padded decimals like 10.00000000
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", body), url
    listing = staff_client.get(reverse("admin:orders_order_changelist")).content.decode()
    assert "field-filled" in listing and "field-avg_price" in listing


def test_revoking_api_keys_in_bulk_asks_first_and_is_audited(superuser_client):
    from ibkrgw.models import ScopedAPIKey

    key, _ = ScopedAPIKey.objects.create_key(name="bulk-revoke", scope="read")
    changelist = reverse("admin:ibkrgw_scopedapikey_changelist")
    page = superuser_client.post(changelist, {"action": "revoke_selected", "_selected_action": [key.pk]})
    assert "Programs using these keys stop working at once" in page.content.decode()
    assert not ScopedAPIKey.objects.get(pk=key.pk).revoked
    superuser_client.post(changelist, {"action": "revoke_selected", "_selected_action": [key.pk], "confirmed": "yes"})
    assert ScopedAPIKey.objects.get(pk=key.pk).revoked
    from audit.models import AuditEntry

    assert AuditEntry.objects.filter(event="apikey.revoked", target_id=key.prefix, source="admin").count() == 1


def test_decimals_render_without_exponent_or_padding():
    from ibkrgw.templatetags.console import plain

    assert [plain(Decimal(v)) for v in ("100", "100.00000000", "190.50", "0E-8", "0.25")] == [
        "100",
        "100",
        "190.5",
        "0",
        "0.25",
    ]
    assert plain(None) is None


def test_lists_show_an_order_with_its_modified_terms_not_as_first_placed(superuser_client):
    """After a modify (BUY 1 @ 187.67 changed to BUY 7 @ 185.73, as REST, the broker and the cancel page
    had it) the order list, the dashboard, Cancel all's confirmation, the bulk actions' confirmation and the
    order's own page still said BUY 1 @ 187.67; the new limit price was shown nowhere in the console."""
    order = OrderFactory(client_order_id="modded", quantity=Decimal("1"), limit_price=Decimal("187.67"))
    OrderEventFactory(order=order, status=OrderStatus.SUBMITTED, remaining_quantity=Decimal("1"))
    modified = {"quantity": "7", "limit_price": "185.73", "stop_price": None}
    OrderEventFactory(
        order=order, status=OrderStatus.SUBMITTED, remaining_quantity=Decimal("7"), data={"modified": modified}
    )
    changelist = reverse("admin:orders_order_changelist")
    pages = {
        "list": superuser_client.get(changelist),
        "dashboard": superuser_client.get(reverse("admin:ibkrgw_dashboard")),
        "cancel all": superuser_client.get(reverse("admin:ibkrgw_cancel_all")),
        "bulk cancel": superuser_client.post(
            changelist, {"action": "cancel_selected", "_selected_action": [str(order.pk)]}
        ),
    }
    for name, response in pages.items():
        body = response.content.decode()
        assert response.status_code == 200, name
        assert "BUY 7 AAPL LMT @ 185.73" in body, name
        assert "@ 187.67" not in body, name
    # Its own page titles it as it is now, and shows the terms in force beside those it was placed with.
    page = superuser_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert "<h2>BUY 7 AAPL LMT @ 185.73 DAY (modded)</h2>" in page
    assert "quantity 7, limit 185.73 (modified)" in page
    # The export has both: the order as placed, and its terms in force.
    export = superuser_client.get(reverse("admin:orders_order_export_csv"))
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [(r["quantity"], r["limit_price"], r["quantity_now"], r["limit_price_now"], r["stop_price_now"])
            for r in rows] == [("1", "187.67", "7", "185.73", "")]  # fmt: skip


def test_going_back_from_a_bulk_action_keeps_the_list_filtered(superuser_client):
    """'No, take me back' on a bulk action's confirmation led to the whole list, the filter the operator had
    chosen the orders under (say every working order) gone."""
    order = OrderFactory(client_order_id="filtered")
    OrderEventFactory(order=order, status=OrderStatus.SUBMITTED, remaining_quantity=Decimal("1"))
    filtered = reverse("admin:orders_order_changelist") + "?status=submitted"
    page = superuser_client.post(filtered, {"action": "cancel_selected", "_selected_action": [str(order.pk)]})
    assert page.status_code == 200
    back = re.search(r'href="([^"]*)" class="button cancel-link" id="ibkrgw-action-back"', page.content.decode())
    assert back is not None and html.unescape(back.group(1)) == filtered
    assert "filtered" in superuser_client.get(html.unescape(back.group(1))).content.decode()
