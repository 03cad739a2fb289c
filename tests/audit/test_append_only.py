"""Every guard layer refuses to change or remove a row, for each of the six ledger models."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, models, transaction

from audit.models import AuditEntry, LedgerSeal
from ibkrgw.errors import AppendOnlyViolation
from orders.models import Commission, Fill, Order, OrderEvent, TradingSwitchEvent
from tests.factories import (
    CommissionFactory,
    FillFactory,
    OrderEventFactory,
    OrderFactory,
    TradingSwitchEventFactory,
    audit_entry,
)

pytestmark = pytest.mark.django_db

# model -> (how to make a saved row, a text column to tamper with)
LEDGER: dict[type[models.Model], tuple[Callable[[], models.Model], str]] = {
    AuditEntry: (audit_entry, "event"),
    Order: (OrderFactory, "symbol"),
    OrderEvent: (OrderEventFactory, "reason"),
    Fill: (FillFactory, "symbol"),
    Commission: (CommissionFactory, "currency"),
    TradingSwitchEvent: (TradingSwitchEventFactory, "reason"),
}
ledger = pytest.mark.parametrize("model", list(LEDGER), ids=lambda m: m.__name__)


def _row(model: type[models.Model]) -> models.Model:
    return LEDGER[model][0]()


@ledger
def test_saving_an_existing_row_is_refused(model):
    row = model.objects.get(pk=_row(model).pk)
    column = LEDGER[model][1]
    setattr(row, column, "changed")
    with pytest.raises(AppendOnlyViolation):
        row.save()
    with pytest.raises(AppendOnlyViolation):
        row.save(update_fields=[column])


@ledger
def test_deleting_a_row_is_refused(model):
    row = _row(model)
    with pytest.raises(AppendOnlyViolation):
        row.delete()
    assert model.objects.filter(pk=row.pk).exists()


@ledger
def test_queryset_update_is_refused(model):
    row = _row(model)
    with pytest.raises(AppendOnlyViolation):
        model.objects.filter(pk=row.pk).update(**{LEDGER[model][1]: "changed"})


@ledger
def test_queryset_delete_is_refused(model):
    row = _row(model)
    with pytest.raises(AppendOnlyViolation):
        model.objects.filter(pk=row.pk).delete()
    with pytest.raises(AppendOnlyViolation):
        model.objects.all().delete()
    assert model.objects.filter(pk=row.pk).exists()


@ledger
def test_bulk_update_and_update_or_create_are_refused(model):
    row = _row(model)
    column = LEDGER[model][1]
    with pytest.raises(AppendOnlyViolation):
        model.objects.bulk_update([row], [column])
    with pytest.raises(AppendOnlyViolation):
        model.objects.update_or_create(pk=row.pk, defaults={column: "changed"})


@ledger
def test_raw_sql_update_is_refused_by_the_database(model):
    row = _row(model)
    table, pk, column = model._meta.db_table, model._meta.pk.column, LEDGER[model][1]
    # The failing statement gets its own savepoint so the test's transaction stays usable.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        pk_value = model._meta.pk.get_db_prep_value(row.pk, connection)
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s", ["changed", pk_value])
    assert getattr(model.objects.get(pk=row.pk), column) != "changed"


@ledger
def test_raw_sql_delete_is_refused_by_the_database(model):
    row = _row(model)
    table = model._meta.db_table
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
    assert model.objects.filter(pk=row.pk).exists()


def test_new_rows_can_still_be_created_and_bulk_created():
    order = OrderFactory()
    OrderEvent.objects.bulk_create(
        [OrderEvent(order=order, status="submitted"), OrderEvent(order=order, status="filled")]
    )
    assert list(order.events.values_list("status", flat=True)) == ["submitted", "filled"]
    assert OrderEvent.objects.filter(order=order).count() == 2
    assert Order.objects.get(pk=order.pk).quantity == Decimal("10")


def test_an_audit_entry_cannot_be_written_around_audit_record():
    # Without seq and hashes it would break the chain for every later entry.
    with pytest.raises(ValueError, match="audit_record"):
        AuditEntry.objects.create(
            event="order.submitted", actor_kind="system", actor_label="x", source="cli", correlation_id="c"
        )


@ledger
def test_truncate_is_refused_on_postgresql(model):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    _row(model)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the pending FK checks of this test's inserts now
        cursor.execute(f"TRUNCATE {model._meta.db_table} CASCADE")
    assert model.objects.exists()


def _replace(table: str, values: dict) -> None:
    columns = ", ".join(connection.ops.quote_name(column) for column in values)
    marks = ", ".join(["%s"] * len(values))
    # Its own savepoint, so the test's transaction stays usable after the refusal.
    refused = pytest.raises(DatabaseError, match=f"append-only: {table}")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})", list(values.values()))


def _stored(table: str, pk_column: str, pk_value) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE {pk_column} = %s", [pk_value])
        names = [column[0] for column in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def _seal_of_a_new_entry() -> int:
    audit_entry()
    return LedgerSeal.objects.order_by("-seq").values_list("seq", flat=True)[0]


@pytest.mark.parametrize("model", [*LEDGER, LedgerSeal], ids=lambda m: m.__name__)
def test_insert_or_replace_over_a_row_is_refused_on_sqlite(model):
    # SQLite's REPLACE deletes the row it conflicts with without firing delete triggers.
    if connection.vendor != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    row = _row(model) if model in LEDGER else LedgerSeal.objects.filter(seq=_seal_of_a_new_entry()).get()
    table, pk = model._meta.db_table, model._meta.pk
    before = _stored(table, pk.column, pk.get_db_prep_value(row.pk, connection))
    changed = next(name for name, value in before.items() if isinstance(value, str) and name != pk.column)
    _replace(table, {**before, changed: "rewritten"})
    assert _stored(table, pk.column, pk.get_db_prep_value(row.pk, connection)) == before


def test_insert_or_replace_over_a_unique_key_is_refused_on_sqlite():
    # A new primary key but a key another row holds: REPLACE would delete that row.
    if connection.vendor != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    fill = FillFactory()
    order = OrderFactory()
    counts = (Fill.objects.count(), Order.objects.count())
    row = _stored("orders_fill", "id", fill.pk)
    _replace("orders_fill", {**row, "id": fill.pk + 1000, "price": "1"})
    row = _stored("orders_order", "id", order.pk.hex)
    _replace("orders_order", {**row, "id": "f" * 32, "quantity": "500"})
    assert Fill.objects.get(pk=fill.pk).price == fill.price
    assert Order.objects.get(pk=order.pk).quantity == order.quantity
    assert (Fill.objects.count(), Order.objects.count()) == counts
