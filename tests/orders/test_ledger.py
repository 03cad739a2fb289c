"""The order ledger's models: invariants the services rely on, and their append-only guards."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import ProtectedError

from ibkrgw.errors import AppendOnlyViolation, ErrorCode
from orders.models import Commission, Fill, Order, OrderEvent, OrderStatus, TradingSwitchEvent
from tests.factories import (
    CommissionFactory,
    FillFactory,
    OrderEventFactory,
    OrderFactory,
    TradingSwitchEventFactory,
)

pytestmark = pytest.mark.django_db


def test_client_order_id_is_unique_per_account_only():
    OrderFactory(account="DU1", client_order_id="same")
    OrderFactory(account="DU2", client_order_id="same")
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(account="DU1", client_order_id="same")


def test_an_orders_state_is_its_latest_event_and_events_come_back_in_order():
    order = OrderFactory()
    for status in (OrderStatus.PENDING_SUBMIT, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
        OrderEventFactory(order=order, status=status)
    assert list(order.events.values_list("status", flat=True)) == ["pending_submit", "submitted", "partially_filled"]
    assert OrderEvent.objects.filter(order=order).last().status == OrderStatus.PARTIALLY_FILLED


def test_money_and_quantities_round_trip_as_exact_decimals():
    # (SQLite keeps 15 significant digits of a DecimalField; prices and quantities fit easily.)
    order = OrderFactory(quantity=Decimal("0.00000001"), limit_price=Decimal("1234567.12345678"))
    stored = Order.objects.get(pk=order.pk)
    assert stored.quantity == Decimal("0.00000001")
    assert stored.limit_price == Decimal("1234567.12345678")
    assert OrderEventFactory(order=order).filled_quantity == Decimal(0)


def test_a_bracket_links_children_to_the_parent_and_protects_it():
    parent = OrderFactory(role="entry", oca_group="oca-1")
    OrderFactory(parent=parent, role="take_profit", oca_group="oca-1", action="SELL")
    OrderFactory(parent=parent, role="stop_loss", oca_group="oca-1", action="SELL", order_type="STP")
    assert sorted(parent.children.values_list("role", flat=True)) == ["stop_loss", "take_profit"]
    # Even Django's own collector can't cascade through the ledger.
    with pytest.raises((AppendOnlyViolation, ProtectedError)):
        Order.delete(parent)


def test_one_fill_per_execution_id_and_one_commission_per_fill():
    fill = FillFactory(exec_id="e-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        FillFactory(exec_id="e-1")
    CommissionFactory(fill=fill, commission=Decimal("1.05"), realized_pnl=Decimal("-3.20"))
    with pytest.raises(IntegrityError), transaction.atomic():
        CommissionFactory(fill=fill, exec_id="e-1-again")
    stored = Fill.objects.select_related("commission").get(exec_id="e-1")
    assert stored.commission.realized_pnl == Decimal("-3.20")


@pytest.mark.parametrize("order_ref", ["", "placed-in-tws", "test-mine"])
def test_a_fill_of_an_order_placed_elsewhere_has_no_order(order_ref):
    from datetime import UTC, datetime

    from audit.models import AuditEntry
    from brokers.adapter import BrokerExecution
    from orders.services import fill_record

    mine = OrderFactory(client_order_id="test-mine", account="DU1")
    execution = BrokerExecution(
        exec_id=f"e-{order_ref or 'none'}",
        order_ref=order_ref,
        broker_order_id=7,
        perm_id=None,
        account="DU9",
        con_id=265598,
        symbol="AAPL",
        side="BOT",
        quantity=Decimal("3"),
        price=Decimal("189.42"),
        executed_at=datetime(2026, 3, 2, 15, tzinfo=UTC),
    )
    fill = fill_record(execution=execution)
    expected = mine if order_ref == "test-mine" else None
    assert Fill.objects.get(exec_id=execution.exec_id).order == expected
    assert fill.order == expected
    entry = AuditEntry.objects.get(event="fill.recorded", target_id=execution.exec_id)
    assert entry.data["order_id"] == (str(mine.pk) if expected else None)
    assert fill_record(execution=execution) is None  # the same execution again is not a second fill


def test_the_kill_switch_state_is_the_latest_row():
    from orders.selectors import trading_halted

    assert trading_halted() is False  # no row yet: not halted
    TradingSwitchEventFactory(halted=True)
    assert trading_halted() is True
    TradingSwitchEventFactory(halted=False)
    assert trading_halted() is False
    TradingSwitchEventFactory(halted=True)
    assert trading_halted() is True
    assert TradingSwitchEvent.objects.count() == 3


@pytest.mark.parametrize(
    "factory",
    [OrderFactory, OrderEventFactory, FillFactory, CommissionFactory, TradingSwitchEventFactory],
    ids=lambda f: f._meta.model.__name__,
)
def test_every_orders_ledger_model_refuses_updates_and_deletes_at_every_layer(factory):
    row = factory()
    model = type(row)
    with pytest.raises(AppendOnlyViolation) as excinfo:
        model.objects.get(pk=row.pk).save()
    assert excinfo.value.code == ErrorCode.LEDGER_APPEND_ONLY
    with pytest.raises(AppendOnlyViolation):
        row.delete()
    with pytest.raises(AppendOnlyViolation):
        model.objects.filter(pk=row.pk).update(pk=row.pk)
    with pytest.raises(AppendOnlyViolation):
        model.objects.filter(pk=row.pk).delete()
    table = model._meta.db_table
    for sql in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
        with (
            pytest.raises(DatabaseError, match=f"append-only: {table}"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert model.objects.filter(pk=row.pk).exists()


@pytest.mark.parametrize("model", [Order, OrderEvent, Fill, Commission, TradingSwitchEvent], ids=lambda m: m.__name__)
def test_orders_admin_is_read_only(model, rf, django_user_model):
    request = rf.get("/admin/")
    request.user = django_user_model.objects.create_superuser("op", "op@example.com", "pw-for-tests-only")
    model_admin = admin.site._registry[model]
    assert not (
        model_admin.has_add_permission(request)
        or model_admin.has_change_permission(request)
        or model_admin.has_delete_permission(request)
    )


def test_order_admin_page_shows_the_order_with_its_events(client, django_user_model):
    event = OrderEventFactory(reason="<b>not bold</b>")
    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "pw-for-tests-only"))
    response = client.get(f"/admin/orders/order/{event.order.pk}/change/")
    assert response.status_code == 200
    assert "&lt;b&gt;not bold&lt;/b&gt;" in response.content.decode()
