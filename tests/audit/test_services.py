"""`audit_record`: the only writer of the audit log."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.db.transaction import TransactionManagementError

from audit import events
from audit.chain import verify_chain
from audit.models import AuditEntry
from audit.services import audit_record
from ibkrgw.actors import ActorKind, Source, correlation_id_var
from tests.factories import audit_entry, make_actor


@pytest.mark.django_db
def test_an_unknown_event_name_is_refused():
    with pytest.raises(ValueError, match="unknown audit event"), transaction.atomic():
        audit_record(event="order.teleported", actor=make_actor())
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_run_outside_a_transaction():
    # Otherwise the entry could commit without the change it records, or the other way round.
    with pytest.raises(TransactionManagementError):
        audit_record(event=events.ORDER_SUBMITTED, actor=make_actor())
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_the_actors_correlation_id_and_identity_land_on_the_entry():
    actor = make_actor(kind=ActorKind.API_KEY, label="bot (abcd1234)", source=Source.REST, correlation_id="req-42")
    entry = audit_entry(event=events.ORDER_SENT, actor=actor, target_type="order", target_id="o-1")
    stored = AuditEntry.objects.get(pk=entry.seq)
    assert (stored.correlation_id, stored.actor_kind, stored.actor_label, stored.source) == (
        "req-42",
        "api_key",
        "bot (abcd1234)",
        "rest",
    )
    assert (stored.event, stored.target_type, stored.target_id) == ("order.sent", "order", "o-1")


@pytest.mark.django_db
def test_the_correlation_id_of_the_current_request_is_used_by_default():
    token = correlation_id_var.set("from-middleware")
    try:
        entry = audit_entry(actor=make_actor())
    finally:
        correlation_id_var.reset(token)
    assert entry.correlation_id == "from-middleware"


@pytest.mark.django_db
def test_data_is_stored_exactly_as_hashed_with_decimals_as_strings():
    order_id = uuid.uuid4()
    entry = audit_entry(data={"price": Decimal("189.50"), "order_id": order_id, "nested": {"q": Decimal("1")}})
    assert entry.data == {"price": "189.50", "order_id": str(order_id), "nested": {"q": "1"}}
    assert AuditEntry.objects.get(pk=entry.seq).data == entry.data


@pytest.mark.django_db
def test_a_rolled_back_change_leaves_no_entry_and_no_hole_in_the_chain():
    audit_entry()
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(event=events.ORDER_SUBMITTED, actor=make_actor())
        raise RuntimeError("the change failed")
    audit_entry()
    assert list(AuditEntry.objects.values_list("seq", flat=True)) == [1, 2]
    assert verify_chain(AuditEntry.objects.order_by("seq")) is None


WRITERS = 6
PER_WRITER = 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_the_chain_linear():
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("threads need a file-based test database (TEST_DATABASE_NAME)")
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_WRITER):
                audit_entry(event=events.ORDER_STATUS_CHANGED, target_id=f"{n}-{i}", data={"writer": n, "i": i})
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, WRITERS * PER_WRITER + 1)
    )
    assert verify_chain(AuditEntry.objects.order_by("seq")) is None


@pytest.mark.django_db
def test_sequential_writers_keep_the_chain_linear():
    for i in range(20):
        audit_entry(data={"i": i})
    assert AuditEntry.objects.count() == 20
    assert verify_chain(AuditEntry.objects.order_by("seq")) is None
