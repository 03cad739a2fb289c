"""A ledger value rewritten into something the application cannot read (text in a number column, written
around the triggers as someone holding the database would) must not blind the operator: REST and the
console keep answering, the readable rows stay in sight and the unreadable one is named with its table and
key (409 `ledger_unreadable` for programs, listed with a message in the console)."""

from __future__ import annotations

import csv
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from orders.models import OrderStatus
from tests.audit.test_ledger_seal import raw, rewrite_around_triggers, text_stored_database, uuid_column, verify
from tests.conftest import _client_with_key
from tests.factories import CommissionFactory, FillFactory, OrderEventFactory, OrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger() -> dict:
    """Two orders, each with an event, a fill and its commission; then one fill's price rewritten as text."""
    text_stored_database()
    tampered = OrderFactory(client_order_id="tampered-1", symbol="AAPL")
    intact = OrderFactory(client_order_id="intact-1", symbol="MSFT")
    rows: dict = {"tampered": tampered, "intact": intact}
    for name, order in (("tampered", tampered), ("intact", intact)):
        OrderEventFactory(order=order, status=OrderStatus.FILLED, filled_quantity=Decimal(10))
        fill = FillFactory(order=order, symbol=order.symbol)
        CommissionFactory(fill=fill)
        rows[f"{name}_fill"] = fill
    rewrite_around_triggers("orders_fill", rows["tampered_fill"].pk, "price", "abc")
    return rows


@pytest.fixture
def console(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "", "pw-not-used-elsewhere"))
    return client


def _unreadable(response, table: str, pk) -> dict:
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "ledger_unreadable"
    assert (error["details"]["table"], error["details"]["pk"]) == (table, str(pk))
    assert f"{table} pk={pk}" in error["message"] and "manage.py audit_verify" in error["message"]
    return error


def test_rest_names_the_unreadable_row_and_still_serves_the_readable_ones(ledger, read_client_in_test_transaction):
    client = read_client_in_test_transaction
    fill, tampered, intact = ledger["tampered_fill"], ledger["tampered"], ledger["intact"]
    error = _unreadable(client.get("/api/v1/orders/"), "orders_fill", fill.pk)
    assert error["details"]["rows"] == [
        {
            "table": "orders_fill",
            "pk": str(fill.pk),
            "problems": ['price holds "abc", which is not a valid DecimalField'],
        }
    ]
    _unreadable(client.get(f"/api/v1/orders/{tampered.pk}/"), "orders_fill", fill.pk)
    _unreadable(client.get("/api/v1/fills/"), "orders_fill", fill.pk)
    # What can be read is still there: the other order, and lists filtered around the row.
    assert client.get(f"/api/v1/orders/{intact.pk}/").json()["fills"][0]["price"] == "189.42"
    assert [o["id"] for o in client.get("/api/v1/orders/?symbol=MSFT").json()["results"]] == [str(intact.pk)]
    assert client.get(f"/api/v1/fills/?order_id={intact.pk}").json()["count"] == 1
    # Acting on the order reads it the same way: refused before anything is sent.
    trade = _client_with_key("trade")
    _unreadable(trade.post(f"/api/v1/orders/{tampered.pk}/cancel/"), "orders_fill", fill.pk)
    # The ledger itself still says what happened.
    code, out = verify()
    assert code == 1 and f"orders_fill pk={fill.pk}: row changed behind the application's back" in out


def test_rest_names_an_unreadable_order_event_and_an_unreadable_order(ledger, read_client_in_test_transaction):
    client = read_client_in_test_transaction
    event = ledger["intact"].events.get()
    rewrite_around_triggers("orders_orderevent", event.pk, "filled_quantity", "x")
    error = client.get("/api/v1/orders/").json()["error"]
    assert error["code"] == "ledger_unreadable"
    assert {(row["table"], row["pk"]) for row in error["details"]["rows"]} == {
        ("orders_fill", str(ledger["tampered_fill"].pk)),
        ("orders_orderevent", str(event.pk)),
    }
    _unreadable(client.get(f"/api/v1/orders/{ledger['intact'].pk}/"), "orders_orderevent", event.pk)
    order = OrderFactory(client_order_id="intent-rewritten")
    rewrite_around_triggers("orders_order", uuid_column(order.pk), "quantity", "abc")
    _unreadable(client.get(f"/api/v1/orders/{order.pk}/"), "orders_order", order.pk)


def test_the_console_lists_what_it_can_read_and_names_what_it_cannot(ledger, console):
    fill, tampered, intact = ledger["tampered_fill"], ledger["tampered"], ledger["intact"]
    named = f"orders_fill pk={fill.pk}: price holds &quot;abc&quot;"
    for url in (reverse("admin:orders_order_changelist"), reverse("admin:orders_fill_changelist")):
        page = console.get(url)
        assert page.status_code == 200
        text = page.content.decode()
        assert named in text and "manage.py audit_verify" in text
        assert "intact-1" in text  # the order, or the fill's order
    orders = console.get(reverse("admin:orders_order_changelist")).content.decode()
    assert "tampered-1" not in orders.split(named)[1]  # not listed as if it were intact
    dashboard = console.get(reverse("admin:ibkrgw_dashboard"))
    assert dashboard.status_code == 200
    text = dashboard.content.decode()
    assert 'id="ibkrgw-ledger-unreadable"' in text and named in text and "intact-1" in text
    # The order's own page cannot show it: back to the list, saying why.
    page = console.get(reverse("admin:orders_order_change", args=[tampered.pk]), follow=True)
    assert page.status_code == 200 and named in page.content.decode()
    assert console.get(reverse("admin:orders_order_change", args=[intact.pk])).status_code == 200


def test_the_csv_export_names_an_unreadable_row_in_its_place_and_goes_on(ledger, console):
    fill = ledger["tampered_fill"]
    response = console.get(reverse("admin:orders_fill_export_csv"))
    assert response.status_code == 200
    rows = list(csv.reader(b"".join(response.streaming_content).decode().splitlines()))
    assert len(rows) == 3  # the header, the intact fill, the unreadable one named
    assert ledger["intact_fill"].exec_id in rows[1]
    assert rows[2][0].startswith(f"UNREADABLE orders_fill pk={fill.pk}: price holds")


def test_a_date_that_cannot_be_read_turns_the_date_drill_down_off_not_the_list(console):
    text_stored_database()
    tampered = OrderFactory(client_order_id="bad-date")
    OrderFactory(client_order_id="good-date")
    rewrite_around_triggers("orders_order", tampered.pk.hex, "created_at", "garbage")
    page = console.get(reverse("admin:orders_order_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "good-date" in text and "The date drill-down is off" in text and "manage.py audit_verify" in text


@pytest.mark.parametrize("stored", ["garbage", "12345", ""])
def test_a_time_that_is_no_time_is_named_instead_of_answered_as_null(stored, read_client_in_test_transaction):
    """SQLite's driver reads text that is no date and time (an empty one too) as NULL: an order's `created_at`
    (never null) was answered `null`, as if nothing were wrong. It is an unreadable value like any other."""
    text_stored_database()
    order = OrderFactory(client_order_id="tampered-time")
    fill = FillFactory(order=order)
    rewrite_around_triggers("orders_order", uuid_column(order.pk), "created_at", stored)
    error = _unreadable(read_client_in_test_transaction.get(f"/api/v1/orders/{order.pk}/"), "orders_order", order.pk)
    assert error["details"]["rows"][0]["problems"] == [
        f'created_at holds "{stored}", which is not a valid DateTimeField'
    ]
    rewrite_around_triggers("orders_fill", fill.pk, "executed_at", stored)
    _unreadable(read_client_in_test_transaction.get("/api/v1/fills/"), "orders_fill", fill.pk)


def test_an_audit_entry_that_cannot_be_read_is_named_by_the_audit_list_and_the_dashboard_still_opens(
    console, ledger_triggers_dropped
):
    """The audit list answered 500 and the operator console's dashboard (which checks the audit chain) failed
    with it: now the list names the entry (409) and the dashboard shows the chain as broken at it."""
    from ibkrgw.console.reads import chain_status
    from tests.factories import audit_entry

    text_stored_database()
    entry = audit_entry()
    raw("UPDATE audit_auditentry SET created_at = 'garbage' WHERE seq = %s", [entry.pk])

    response = _client_with_key("read").get("/api/v1/audit/")
    _unreadable(response, "audit_auditentry", entry.pk)
    assert _client_with_key("read").get(f"/api/v1/audit/?target_id=nothing-{entry.pk}").status_code == 200

    assert console.get(reverse("admin:ibkrgw_dashboard")).status_code == 200
    status = chain_status(force=True)
    assert status["ok"] is False and "cannot be read" in status["broken"]["reason"]


def test_text_in_an_integer_column_is_named_where_it_used_to_pass_for_a_value(ledger):
    """SQLite keeps text written into an integer column and Django reads it back as text, without complaint:
    `audit_verify` now names it as a value the gateway cannot read, not only as a difference from the seal."""
    event = ledger["intact"].events.get()
    rewrite_around_triggers("orders_orderevent", event.pk, "perm_id", "garbage")
    code, out = verify()
    assert code == 1
    assert (
        f'orders_orderevent pk={event.pk}: row changed behind the application\'s back: perm_id holds "garbage"' in out
    )
