"""A busy writer's transaction seals its rows together as it ends, and the ledger verifies all the same.

The order pipeline and the recorder write through `sealed_at_commit`: each row is inserted at once,
its seal when the block ends, still inside the transaction. What must hold is what `audit_verify`
checks: every row committed has exactly one seal of its stored content, rows that were rolled back
have none, and nothing commits without its seals.
"""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from audit import events
from audit.insert import insert_row
from audit.models import AuditEntry, LedgerSeal
from audit.seal import content_of, sealed_at_commit
from audit.services import audit_record, ledger_transaction
from ibkrgw.actors import Actor
from orders.models import Fill, Order, OrderEvent, TradingSwitchEvent
from tests.factories import (
    CommissionFactory,
    FillFactory,
    OrderEventFactory,
    OrderFactory,
    TradingSwitchEventFactory,
)


def verify() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue()


def sealed_rows() -> set[tuple[str, str]]:
    return set(LedgerSeal.objects.values_list("table", "row_pk"))


@pytest.mark.django_db
def test_the_rows_of_a_block_are_sealed_as_it_ends_in_the_order_they_were_written():
    before = LedgerSeal.objects.count()
    with sealed_at_commit():
        event = OrderEventFactory()
        fill = FillFactory(order=event.order, price=Decimal("123456789012.12345678"))
        commission = CommissionFactory(fill=fill)
        entry = audit_record(event=events.FILL_RECORDED, actor=Actor.system(), target_type="fill", data={"x": 1})
        assert LedgerSeal.objects.count() == before  # nothing sealed row by row inside the block
    seals = list(LedgerSeal.objects.order_by("seq")[before:])
    assert [(s.table, s.row_pk) for s in seals] == [
        ("orders_order", str(event.order.pk)),
        ("orders_orderevent", str(event.pk)),
        ("orders_fill", str(fill.pk)),
        ("orders_commission", str(commission.pk)),
        ("audit_auditentry", str(entry.seq)),
    ]
    code, out = verify()
    assert code == 0, out


@pytest.mark.django_db
def test_a_savepoint_rolled_back_inside_the_block_leaves_no_seal_and_its_reused_key_one():
    with ledger_transaction():
        order = OrderFactory()
        with pytest.raises(RuntimeError), transaction.atomic():
            OrderEvent.objects.create(order=order, status="pending_submit")
            audit_record(event=events.ORDER_SUBMITTED, actor=Actor.system(), target_type="order")
            raise RuntimeError("refused")
        # Keys freed by the rollback may be taken again (SQLite reuses them): one row, one seal.
        OrderEvent.objects.create(order=order, status="pending_submit")
        audit_record(event=events.ORDER_SUBMITTED, actor=Actor.system(), target_type="order")
    rows = {("orders_order", str(order.pk))}
    rows |= {("orders_orderevent", str(pk)) for pk in OrderEvent.objects.values_list("pk", flat=True)}
    rows |= {("audit_auditentry", str(seq)) for seq in AuditEntry.objects.values_list("seq", flat=True)}
    assert sealed_rows() == rows
    assert LedgerSeal.objects.count() == len(rows) == 3
    code, out = verify()
    assert code == 0, out


@pytest.mark.django_db(transaction=True)
def test_a_block_that_fails_commits_neither_its_rows_nor_their_seals():
    FillFactory()
    rows, seals = Fill.objects.count(), LedgerSeal.objects.count()
    with pytest.raises(IntegrityError), sealed_at_commit(durable=True):
        fill = FillFactory()
        FillFactory(exec_id=fill.exec_id)  # the second insert fails: the whole block goes
    assert (Fill.objects.count(), LedgerSeal.objects.count()) == (rows, seals)
    with pytest.raises(RuntimeError), sealed_at_commit(durable=True):
        FillFactory()
        raise RuntimeError("after the insert, before the end")
    assert (Fill.objects.count(), LedgerSeal.objects.count()) == (rows, seals)
    code, out = verify()
    assert code == 0, out


@pytest.mark.django_db(transaction=True)
def test_a_nested_block_leaves_the_sealing_to_the_outer_one():
    with sealed_at_commit(durable=True):
        with sealed_at_commit():
            OrderFactory()
        assert LedgerSeal.objects.count() == 0
        OrderFactory()
    assert LedgerSeal.objects.count() == 2
    assert verify()[0] == 0
    OrderFactory()  # outside any block: sealed at once again
    assert LedgerSeal.objects.count() == 3


@pytest.mark.django_db
def test_the_compiled_insert_stores_exactly_what_save_stores():
    order = OrderFactory(preview={"b": 1.0, "a": [1e16, 0.1], "s": "é"}, limit_price=Decimal("189.123456789"))
    terms = {
        "order": order,
        "status": "partially_filled",
        "filled_quantity": Decimal("0.00000001"),
        "average_fill_price": Decimal("123456789012.12345678"),
        "data": {"client_id": 7, "z": [1, "é"]},
        "reason": "partly",
    }
    compiled = OrderEvent(**terms)
    with transaction.atomic():
        insert_row(compiled, "default")
    saved = OrderEvent(**terms, at=compiled.at)
    with transaction.atomic():
        super(OrderEvent, saved).save(force_insert=True)  # Django's own Model.save
    assert compiled.pk is not None and saved.pk == compiled.pk + 1
    assert not compiled._state.adding and compiled._state.db == "default"
    columns = [f.attname for f in OrderEvent._meta.concrete_fields if f.attname != "id"]
    rows = {row.pop("id"): row for row in OrderEvent.objects.values("id", *columns)}
    assert rows[compiled.pk] == rows[saved.pk]
    assert rows[compiled.pk]["data"] == {"client_id": 7, "z": [1, "é"]}
    assert content_of(OrderEvent, {"id": 0, **rows[compiled.pk]}) == content_of(OrderEvent, {"id": 0, **rows[saved.pk]})


@pytest.mark.django_db
def test_the_compiled_insert_sends_the_save_signals_receivers_rely_on():
    from django.db.models.signals import post_save, pre_save

    seen: list[tuple[str, bool]] = []

    def pre(sender, instance, **kwargs):
        seen.append(("pre", instance.pk is None))

    def post(sender, instance, created, **kwargs):
        seen.append(("post", created and instance.pk is not None))

    pre_save.connect(pre, sender=TradingSwitchEvent)
    post_save.connect(post, sender=TradingSwitchEvent)
    try:
        TradingSwitchEventFactory()
    finally:
        pre_save.disconnect(pre, sender=TradingSwitchEvent)
        post_save.disconnect(post, sender=TradingSwitchEvent)
    assert seen == [("pre", True), ("post", True)]


@pytest.mark.django_db
def test_an_order_gets_its_generated_key_and_a_duplicate_key_is_refused_by_the_database():
    order = OrderFactory()
    assert isinstance(order.pk, type(Order._meta.pk.get_default()))
    assert Order.objects.get(pk=order.pk).client_order_id == order.client_order_id
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(account=order.account, client_order_id=order.client_order_id)
