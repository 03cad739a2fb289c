"""Broker reports into the ledger, as the recorder thread and reconciliation call them: each status,
fill and commission recorded once, acknowledgements, and what reconciliation settles.

These run on plain report values and the ledger; no broker is needed to write what a broker said.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEntry
from brokers.adapter import (
    BrokerCommission,
    BrokerExecution,
    BrokerOrderStatus,
    BrokerOrderWithdrawn,
    BrokerSnapshot,
)
from ibkrgw.actors import Actor, ActorKind, Source
from orders import services
from orders.models import Commission, Fill
from orders.models import OrderStatus as S
from orders.services import brackets, recording
from orders.types import OrderSent
from tests.factories import FillFactory, OrderEventFactory, OrderFactory
from tests.unit.builders import NOW

D = Decimal
BOT = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST)
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]


def report(ref: str, status: str = "Submitted", **fields) -> BrokerOrderStatus:
    values = {
        "order_ref": ref,
        "broker_order_id": 7,
        "perm_id": 700,
        "client_id": 1,
        "status": status,
        "filled": D(0),
        "remaining": D(10),
        "average_fill_price": None,
    }
    values.update(fields)
    return BrokerOrderStatus(**values)


def execution(exec_id: str, ref: str = "", **fields) -> BrokerExecution:
    values = {
        "exec_id": exec_id,
        "order_ref": ref,
        "broker_order_id": 7,
        "perm_id": 700,
        "account": "DU1234567",
        "con_id": 265598,
        "symbol": "AAPL",
        "side": "BOT",
        "quantity": D(4),
        "price": D("189.42"),
        "executed_at": NOW,
        "exchange": "ISLAND",
    }
    values.update(fields)
    return BrokerExecution(**values)


def statuses(order) -> list[str]:
    return list(order.events.order_by("id").values_list("status", flat=True))


def sent_order(**fields):
    return OrderEventFactory(status=S.PENDING_SUBMIT, order__client_order_id="ref-1", **fields).order


# -- order statuses -----------------------------------------------------------------------------------
def test_a_status_is_appended_with_everything_the_broker_said():
    order = sent_order()
    event = services.order_status_apply(
        report=report("ref-1", "Submitted", filled=D(4), remaining=D(6), average_fill_price=D("189.4"))
    )
    assert (event.order, event.status, event.source, event.code, event.reason) == (
        order,
        S.PARTIALLY_FILLED,
        "worker",
        "",
        "",
    )
    assert (event.broker_order_id, event.perm_id, event.filled_quantity, event.remaining_quantity) == (7, 700, 4, 6)
    assert (event.average_fill_price, event.data) == (D("189.4"), {"client_id": 1})
    entry = AuditEntry.objects.get(event="order.status_changed")
    assert (entry.actor_kind, entry.target_id, entry.data["previous"]) == ("system", str(order.pk), S.PENDING_SUBMIT)


def test_the_same_report_twice_is_one_event_and_each_change_is_news():
    order = sent_order()
    assert services.order_status_apply(report=report("ref-1")) is not None
    assert services.order_status_apply(report=report("ref-1")) is None
    assert services.order_status_apply(report=report("ref-1", filled=D(1), remaining=D(9))) is not None
    assert services.order_status_apply(report=report("ref-1", filled=D(1), remaining=D(9), broker_order_id=8))
    assert statuses(order) == [S.PENDING_SUBMIT, S.SUBMITTED, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED]


def test_nothing_left_to_fill_is_filled_whatever_the_status_says():
    sent_order()
    event = services.order_status_apply(report=report("ref-1", "Submitted", filled=D(10), remaining=D(0)))
    assert (event.status, event.filled_quantity, event.remaining_quantity) == (S.FILLED, 10, 0)


@pytest.mark.parametrize(
    ("status", "code", "ours"),
    [
        ("Cancelled", 201, S.REJECTED),  # IB's rejection arrived first: ib_async marked the order Cancelled
        ("Inactive", 201, S.REJECTED),
        ("Cancelled", 202, S.CANCELLED),
        ("Inactive", 399, S.INACTIVE),  # not a rejection: IB may yet work the order
    ],
)
def test_the_broker_s_reason_is_kept_when_it_stops_an_order(status, code, ours):
    sent_order()
    event = services.order_status_apply(report=report("ref-1", status, reason="IB's words", error_code=code))
    assert (event.status, event.reason, event.code) == (ours, "IB's words", str(code))


def test_a_working_order_s_reason_is_not_news():
    sent_order()
    event = services.order_status_apply(report=report("ref-1", reason="something", error_code=201, client_id=None))
    assert (event.reason, event.code, event.data) == ("", "", {})


REJECTED_TEXT = "Order rejected - reason:The order is not accepted."


@pytest.mark.parametrize(
    ("status", "stopped", "explained", "code", "text"),
    [
        ("Inactive", S.INACTIVE, S.REJECTED, 201, REJECTED_TEXT),  # the rejection makes the Inactive final
        ("Cancelled", S.CANCELLED, S.CANCELLED, 202, "Order Canceled - reason:IOC order remainder cancelled"),
    ],
)
def test_ib_s_error_after_the_stop_it_explains_is_recorded_once_with_it(status, stopped, explained, code, text):
    # IB's error may come right after the status it explains: the stop is recorded, then its reason.
    order = sent_order()
    stop = services.order_status_apply(report=report("ref-1", status))
    assert (stop.status, stop.code, stop.reason) == (stopped, "", "")
    event = services.order_status_apply(report=report("ref-1", status, reason=text, error_code=code))
    assert (event.status, event.code, event.reason, event.source) == (explained, str(code), text, "worker")
    assert (event.broker_order_id, event.perm_id, event.filled_quantity) == (7, 700, 0)
    # Once: the same report again (or from reconciliation), and a report without the error, add nothing.
    assert services.order_status_apply(report=report("ref-1", status, reason=text, error_code=code)) is None
    assert services.order_status_apply(report=report("ref-1", status)) is None
    assert statuses(order) == [S.PENDING_SUBMIT, stopped, explained]
    entry = AuditEntry.objects.filter(event="order.status_changed").latest("seq")
    assert (entry.data["previous"], entry.data["status"], entry.data["code"]) == (stopped, explained, str(code))


@pytest.mark.parametrize(
    ("source", "code"),
    [("worker", "bracket_incomplete"), ("worker", "not_at_broker"), ("worker", "201"), ("rest", "")],
    ids=["bracket withdrawn", "not at broker", "reason known", "not the broker's stop"],
)
def test_a_stop_recorded_with_its_reason_or_not_from_the_broker_takes_no_other(source, code):
    order = OrderEventFactory(status=S.CANCELLED, source=source, code=code, order__client_order_id="ref-1").order
    assert (
        services.order_status_apply(report=report("ref-1", "Cancelled", reason=REJECTED_TEXT, error_code=201)) is None
    )
    assert statuses(order) == [S.CANCELLED]


def test_reconciliation_records_ib_s_reason_for_a_stop():
    order = sent_order()
    counts = services.orders_reconcile(
        snapshot=snapshot(orders=[report("ref-1", "Inactive", reason=REJECTED_TEXT, error_code=201)])
    )
    assert counts["status_events"] == 1
    latest = order.events.order_by("-id").first()
    assert (latest.status, latest.code, latest.reason) == (S.REJECTED, "201", REJECTED_TEXT)


def test_reports_that_name_no_order_of_ours_or_say_nothing_record_nothing():
    order = sent_order()
    assert services.order_status_apply(report=report("placed-in-tws")) is None
    assert services.order_status_apply(report=report("")) is None
    assert services.order_status_apply(report=report("ref-1", "ApiPending")) is None
    assert statuses(order) == [S.PENDING_SUBMIT]


def test_a_simulated_order_never_takes_a_broker_status():
    order = OrderEventFactory(status=S.SIMULATED, order__client_order_id="sim-1").order
    assert services.order_status_apply(report=report("sim-1", "Filled", filled=D(10), remaining=D(0))) is None
    assert statuses(order) == [S.SIMULATED]


def test_a_report_that_would_move_a_finished_order_back_is_ignored():
    order = OrderEventFactory(status=S.FILLED, order__client_order_id="done-1").order
    assert services.order_status_apply(report=report("done-1", "Submitted")) is None
    assert statuses(order) == [S.FILLED]


def test_an_order_without_events_takes_the_broker_s_first_status():
    order = OrderFactory(client_order_id="bare-1")
    assert services.order_status_apply(report=report("bare-1")).status == S.SUBMITTED
    assert statuses(order) == [S.SUBMITTED]


def test_the_newest_order_with_a_reference_is_the_one_reported():
    older = OrderFactory(client_order_id="same", account="DU1")
    newer = OrderFactory(client_order_id="same", account="DU2", created_at=older.created_at + timedelta(seconds=1))
    assert services.order_status_apply(report=report("same")).order == newer


def test_an_order_named_once_is_remembered_until_forgotten():
    order = sent_order()
    services.order_status_apply(report=report("ref-1"))
    with CaptureQueriesContext(connection) as queries:
        recording.order_refs_forget("other")
        assert recording._order_for_ref("ref-1") == order
    assert not [q for q in queries if 'FROM "orders_order"' in q["sql"]]
    recording.order_refs_forget("ref-1")
    with CaptureQueriesContext(connection) as queries:
        assert recording._order_for_ref("ref-1") == order
    assert [q for q in queries if 'FROM "orders_order"' in q["sql"]]


def test_the_memory_of_references_is_bounded(monkeypatch):
    monkeypatch.setattr(recording, "_ORDERS_BY_REF_MAX", 1)
    first = OrderFactory(client_order_id="a-1")
    OrderFactory(client_order_id="a-2")
    recording._order_for_ref("a-1")
    recording._order_for_ref("a-2")  # the oldest is let go
    with CaptureQueriesContext(connection) as queries:
        assert recording._order_for_ref("a-1") == first
    assert [q for q in queries if 'FROM "orders_order"' in q["sql"]]
    with CaptureQueriesContext(connection) as queries:
        assert recording._order_for_ref("a-1") == first
    assert not [q for q in queries if 'FROM "orders_order"' in q["sql"]]


# -- fills and commissions -------------------------------------------------------------------------------
def test_an_execution_is_recorded_once_with_its_order(django_capture_on_commit_callbacks):
    order = sent_order()
    with django_capture_on_commit_callbacks(execute=True) as published:  # websocket clients are told
        fill = services.fill_record(execution=execution("e-1", "ref-1"))
    assert len(published) == 2  # and the fills counter
    stored = Fill.objects.get(exec_id="e-1")
    assert (stored.order, stored.account, stored.con_id, stored.symbol, stored.side) == (
        order,
        "DU1234567",
        265598,
        "AAPL",
        "BOT",
    )
    assert (stored.quantity, stored.price, stored.executed_at, stored.exchange) == (D(4), D("189.42"), NOW, "ISLAND")
    assert (stored.broker_order_id, stored.perm_id, stored.order_ref) == (7, 700, "ref-1")
    assert fill == stored
    entry = AuditEntry.objects.get(event="fill.recorded")
    assert (entry.actor_kind, entry.target_type, entry.target_id) == ("system", "fill", "e-1")
    assert entry.data == {
        "order_id": str(order.pk),
        "side": "BOT",
        "quantity": "4",
        "price": "189.42",
        "symbol": "AAPL",
    }
    assert services.fill_record(execution=execution("e-1", "ref-1")) is None
    assert services.fill_record(execution=execution("e-2", "ref-1")) is not None
    assert Fill.objects.count() == 2


def test_a_commission_is_recorded_once_for_a_recorded_fill(django_capture_on_commit_callbacks):
    commission = BrokerCommission(exec_id="e-9", commission=D("1.05"), currency="USD", realized_pnl=D("-3.2"))
    assert services.commission_record(commission=commission) is None  # its fill is not recorded yet
    fill = FillFactory(exec_id="e-9")
    with django_capture_on_commit_callbacks(execute=True) as published:
        row = services.commission_record(commission=commission)
    assert len(published) == 1
    assert (row.fill, row.exec_id, row.commission, row.currency, row.realized_pnl) == (
        fill,
        "e-9",
        D("1.05"),
        "USD",
        D("-3.2"),
    )
    entry = AuditEntry.objects.get(event="commission.recorded")
    assert (entry.actor_kind, entry.target_type, entry.target_id) == ("system", "fill", "e-9")
    assert entry.data == {"commission": "1.05", "currency": "USD"}
    assert services.commission_record(commission=commission) is None
    assert Commission.objects.count() == 1


# -- acknowledgements ---------------------------------------------------------------------------------
def sent(sent_order, **fields) -> OrderSent:
    values = {"order_id": sent_order.pk, "broker_order_id": 7, "perm_id": 700, "client_id": 2, "actor": BOT}
    values.update(fields)
    return OrderSent(**values)


def test_an_acknowledgement_makes_the_order_submitted_under_its_sender(django_capture_on_commit_callbacks):
    order = sent_order()
    ack = sent(order)
    with django_capture_on_commit_callbacks(execute=True):
        services.order_sent_record(sent=ack)
    assert ack.written.is_set()
    event = order.events.order_by("-id").first()
    assert (event.status, event.source, event.broker_order_id, event.perm_id, event.data) == (
        S.SUBMITTED,
        "rest",
        7,
        700,
        {"client_id": 2},
    )
    entry = AuditEntry.objects.get(event="order.sent")
    assert (entry.actor_label, entry.data["status"], entry.data["broker_order_id"]) == ("bot", S.SUBMITTED, 7)


def test_an_acknowledgement_after_the_broker_moved_the_order_on_is_audited_only(django_capture_on_commit_callbacks):
    order = sent_order()
    OrderEventFactory(order=order, status=S.FILLED, broker_order_id=7)
    ack = sent(order)
    with django_capture_on_commit_callbacks(execute=True):
        services.order_sent_record(sent=ack)
    assert ack.written.is_set()
    assert statuses(order) == [S.PENDING_SUBMIT, S.FILLED]
    entry = AuditEntry.objects.get(event="order.sent")
    assert (entry.actor_label, entry.target_type, entry.target_id) == ("bot", "order", str(order.pk))
    assert entry.data == {"broker_order_id": 7, "client_id": 2}


def test_an_acknowledgement_carrying_the_sent_row_is_recorded_without_reading_the_order():
    order = sent_order()
    with CaptureQueriesContext(connection) as queries:
        services.order_sent_record(sent=sent(order, order=order))
    assert statuses(order) == [S.PENDING_SUBMIT, S.SUBMITTED]
    assert not [q for q in queries if 'FROM "orders_order"' in q["sql"]]


def test_an_acknowledgement_of_an_order_not_in_the_ledger_is_refused():
    from orders.models import Order

    order = OrderFactory.build(client_order_id="never-committed")
    with pytest.raises(Order.DoesNotExist):
        services.order_sent_record(sent=sent(order))


# -- reconciliation -------------------------------------------------------------------------------------
def snapshot(orders=(), executions=(), commissions=(), session_started=None, connection="", **more) -> BrokerSnapshot:
    return BrokerSnapshot(
        orders=tuple(orders),
        executions=tuple(executions),
        commissions=tuple(commissions),
        taken_at=NOW,
        session_started=session_started,
        connection=connection,
        **more,
    )


def test_reconciliation_brings_in_what_the_broker_holds_once():
    order = sent_order()
    FillFactory(exec_id="old-fill")
    broker = snapshot(
        orders=[report("ref-1", "Filled", filled=D(10), remaining=D(0))],
        executions=[execution("e-1", "ref-1"), execution("old-fill"), execution("e-2", "ref-1")],
        commissions=[BrokerCommission("e-1", D(1), "USD", None), BrokerCommission("nope", D(1), "USD", None)],
    )
    counts = services.orders_reconcile(snapshot=broker)
    assert counts == {
        "status_events": 1,
        "fills": 2,
        "commissions": 1,
        "unknown": 0,
        "bracket_incomplete": 0,
        "not_at_broker": 0,
        "terms_at_broker": 0,
    }
    assert statuses(order) == [S.PENDING_SUBMIT, S.FILLED]
    assert services.orders_reconcile(snapshot=broker) == {
        "status_events": 0,
        "fills": 0,
        "commissions": 0,
        "unknown": 0,
        "bracket_incomplete": 0,
        "not_at_broker": 0,
        "terms_at_broker": 0,
    }
    entries = AuditEntry.objects.filter(event="broker.reconciled").order_by("seq")
    assert [(e.actor_kind, e.target_type) for e in entries] == [("system", "gateway")] * 2
    assert entries[0].data == counts


def working_order(frozen_clock, order_type: str, **terms):
    """An order the broker acknowledged a minute before this connection, resting at 189.50 (stop 180)."""
    frozen_clock.move_to(NOW - timedelta(minutes=1))
    order = OrderFactory(client_order_id="ref-1", order_type=order_type, **terms)
    OrderEventFactory(order=order, status=S.PENDING_SUBMIT)
    OrderEventFactory(order=order, status=S.SUBMITTED, broker_order_id=7)
    frozen_clock.move_to(NOW)
    return order


@pytest.mark.parametrize(
    ("order_type", "terms", "at_broker", "in_force"),
    [
        ("LMT", {}, {"limit_price": D("188")}, {"quantity": D(10), "limit_price": D("188"), "stop_price": None}),
        ("LMT", {}, {"quantity": D(12)}, {"quantity": D(12), "limit_price": D("189.5"), "stop_price": None}),
        (
            "STP_LMT",
            {"stop_price": D(180)},
            {"stop_price": D(181)},
            {"quantity": D(10), "limit_price": D("189.5"), "stop_price": D(181)},
        ),
        ("LMT", {}, {}, None),  # the same terms: nothing to record
        ("TRAIL_LIMIT", {}, {"limit_price": D("188")}, None),  # IB moves a trailing order's limit itself
    ],
)
def test_reconciliation_records_the_terms_the_broker_works_an_order_with(
    frozen_clock, order_type, terms, at_broker, in_force
):
    order = working_order(frozen_clock, order_type, **terms)
    held = {"quantity": D(10), "limit_price": D("189.50"), "stop_price": terms.get("stop_price"), **at_broker}
    broker = snapshot(orders=[report("ref-1", **held)], session_started=NOW - timedelta(seconds=5))
    counts = services.orders_reconcile(snapshot=broker)
    assert counts["terms_at_broker"] == (1 if in_force else 0)
    assert services.order_terms(order) == (
        in_force or {k: getattr(order, k) for k in ("quantity", "limit_price", "stop_price")}
    )
    if in_force:
        event = order.events.order_by("-id").first()
        assert (event.status, event.source, event.remaining_quantity) == (S.SUBMITTED, "worker", in_force["quantity"])
        assert AuditEntry.objects.filter(event="order.modified", target_id=str(order.pk), actor_kind="system").exists()
    assert services.orders_reconcile(snapshot=broker)["terms_at_broker"] == 0  # once


def test_reconciliation_leaves_terms_changed_on_this_connection_to_the_process_that_changed_them(frozen_clock):
    order = working_order(frozen_clock, "LMT")
    # A modify recorded after this connection was made, newer than what the snapshot saw of the broker.
    OrderEventFactory(order=order, status=S.SUBMITTED, data={"modified": {"quantity": "10", "limit_price": "188"}})
    held = {"quantity": D(10), "limit_price": D("189.50")}
    broker = snapshot(orders=[report("ref-1", **held)], session_started=NOW - timedelta(seconds=5))
    assert services.orders_reconcile(snapshot=broker)["terms_at_broker"] == 0
    assert services.order_terms(order)["limit_price"] == D("188")


def pending_at(frozen_clock, ago: timedelta, ref: str, status: str = S.PENDING_SUBMIT):
    frozen_clock.move_to(NOW - ago)
    order = OrderEventFactory(status=status, order__client_order_id=ref).order
    frozen_clock.move_to(NOW)
    return order


US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("started_ago", "created_ago", "unknown"),
    [
        (timedelta(seconds=10), timedelta(seconds=10) + US, True),  # made before this process started
        (timedelta(seconds=10), timedelta(seconds=10), False),  # this process may still be sending it
        (timedelta(minutes=5), timedelta(seconds=20), False),
        (timedelta(minutes=5), timedelta(seconds=20) + US, True),  # longer than two request timeouts ago
    ],
)
def test_an_intent_the_broker_never_saw_becomes_unknown_and_is_not_sent_again(
    settings, monkeypatch, frozen_clock, started_ago, created_ago, unknown
):
    settings.IB_REQUEST_TIMEOUT = 10
    monkeypatch.setattr(recording, "PROCESS_STARTED_AT", NOW - started_ago)
    order = pending_at(frozen_clock, created_ago, "p-1")
    seen = pending_at(frozen_clock, timedelta(hours=1), "seen-1")
    counts = services.orders_reconcile(snapshot=snapshot(executions=[execution("e-5", "seen-1")]))
    assert counts["unknown"] == int(unknown)
    assert statuses(seen) == [S.PENDING_SUBMIT]
    if not unknown:
        assert statuses(order) == [S.PENDING_SUBMIT]
        return
    assert statuses(order) == [S.PENDING_SUBMIT, S.UNKNOWN]
    latest = order.events.order_by("-id").first()
    assert latest.reason == (
        "Recorded but not seen at the broker: it may never have been sent. "
        "Not re-sent automatically; check and place again if needed."
    )
    entry = AuditEntry.objects.get(event="order.unknown")
    assert (latest.source, entry.actor_kind, entry.target_id) == ("worker", "system", str(order.pk))


def test_orders_a_new_session_of_the_broker_no_longer_holds_are_cancelled(frozen_clock):
    started = NOW - timedelta(minutes=1)
    this_session = pending_at(frozen_clock, timedelta(minutes=1), "this-session", S.SUBMITTED)  # looked at first
    gone = {
        status: pending_at(frozen_clock, timedelta(minutes=1) + US, f"gone-{status}", status)
        for status in (S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING, S.INACTIVE)
    }
    kept = [
        this_session,
        pending_at(frozen_clock, timedelta(hours=1), "reported", S.SUBMITTED),
        pending_at(frozen_clock, timedelta(hours=1), "unknown-1", S.UNKNOWN),
        pending_at(frozen_clock, timedelta(hours=1), "filled-1", S.FILLED),
    ]
    known = kept[1].events.get()
    reported = report("reported", "Submitted", broker_order_id=known.broker_order_id, perm_id=known.perm_id)
    assert services.orders_reconcile(snapshot=snapshot(orders=[reported]))["not_at_broker"] == 0  # no session
    counts = services.orders_reconcile(snapshot=snapshot(orders=[reported], session_started=started))
    assert counts["not_at_broker"] == 4
    for status, order in gone.items():
        assert statuses(order) == [status, S.CANCELLED]
        latest = order.events.order_by("-id").first()
        assert (latest.code, latest.source) == ("not_at_broker", "worker")
        assert latest.reason == (
            "After reconnecting, the broker reports this order neither working nor completed: it no longer holds it."
        )
    assert [len(statuses(order)) for order in kept] == [1, 1, 1, 1]
    assert (
        services.orders_reconcile(snapshot=snapshot(orders=[reported], session_started=started))["not_at_broker"] == 0
    )


def test_another_client_s_order_with_our_order_ref_does_not_keep_ours_working(frozen_clock):
    frozen_clock.move_to(NOW - timedelta(hours=1))
    gone = OrderEventFactory(status=S.SUBMITTED, broker_order_id=7, perm_id=700, order__client_order_id="shared").order
    kept = OrderEventFactory(status=S.SUBMITTED, broker_order_id=8, perm_id=800, order__client_order_id="kept").order
    frozen_clock.move_to(NOW)
    # IB lets any client use any orderRef: a TWS user's order, and its fill, carry the first one's.
    theirs = report("shared", "Submitted", broker_order_id=3, perm_id=999, client_id=0)
    their_fill = execution("0000e0d5.theirs.01.01", "shared", perm_id=999, broker_order_id=3)
    ours = report("kept", "Submitted", broker_order_id=8, perm_id=800)
    counts = services.orders_reconcile(
        snapshot=snapshot(orders=[theirs, ours], executions=[their_fill], session_started=NOW - timedelta(minutes=1))
    )
    assert counts["not_at_broker"] == 1
    assert statuses(gone) == [S.SUBMITTED, S.CANCELLED]
    assert gone.events.order_by("-id").first().code == "not_at_broker"
    assert statuses(kept) == [S.SUBMITTED]


def test_intents_are_each_judged_whatever_comes_first(settings, monkeypatch, frozen_clock):
    settings.IB_REQUEST_TIMEOUT = 10
    monkeypatch.setattr(recording, "PROCESS_STARTED_AT", NOW - timedelta(minutes=5))
    in_flight = pending_at(frozen_clock, timedelta(seconds=1), "new-1")  # recorded first, skipped
    stuck = [pending_at(frozen_clock, timedelta(minutes=10), f"old-{n}") for n in range(2)]
    assert services.orders_reconcile(snapshot=snapshot())["unknown"] == 2
    assert [statuses(order)[-1] for order in stuck] == [S.UNKNOWN, S.UNKNOWN]
    assert statuses(in_flight) == [S.PENDING_SUBMIT]


# -- orders the pipeline commits for sending -----------------------------------------------------------
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "rolled-back"])
def test_an_order_admitted_for_the_broker_is_remembered_by_its_reference_once_committed(
    committed, django_capture_on_commit_callbacks
):
    from django.db import transaction

    from orders.services import trading
    from tests.unit import builders

    request = builders.order(client_order_id="fresh-1")

    class RolledBack(Exception):
        pass

    with pytest.raises(RolledBack) if not committed else django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            order = trading._intent_row(
                request, builders.contract(), "DU1", "d", None, BOT, S.PENDING_SUBMIT, role="entry"
            )
            exit_order = trading._intent_row(
                builders.order(client_order_id="fresh-1.tp", action="SELL"),
                builders.contract(),
                "DU1",
                "d",
                None,
                BOT,
                S.PENDING_SUBMIT,
                parent=order,
                role="take_profit",
            )
            assert "fresh-1" not in recording._orders_by_ref  # not before it commits
            if not committed:
                raise RolledBack
    if committed:
        with CaptureQueriesContext(connection) as queries:
            remembered = recording._order_for_ref("fresh-1")
        assert not [q for q in queries if 'FROM "orders_order"' in q["sql"]]
        assert remembered == order and remembered is not order
        # A bare row: the events and fills the answer collects on `order` are not kept alive with it.
        assert order.recorded is not None and remembered.recorded is None
        remembered_exit = recording._order_for_ref("fresh-1.tp")
        assert remembered_exit == exit_order and "parent" not in remembered_exit._state.fields_cache
        assert remembered_exit.parent == order  # its entry is read again when asked for
    else:
        assert "fresh-1" not in recording._orders_by_ref
        assert recording._order_for_ref("fresh-1") is None


def test_a_report_read_while_a_newer_order_with_its_reference_commits_keeps_the_newer_one(monkeypatch):
    older = OrderFactory(client_order_id="shared-ref", account="DU1")
    newer = OrderFactory(client_order_id="shared-ref", account="DU2")
    read = recording.order_for_ref

    def read_then_newer_commits(order_ref):
        found = read(order_ref)
        recording.order_ref_remember(newer)  # the pipeline's commit lands while the report's read ran
        return older if found == newer else found

    monkeypatch.setattr(recording, "order_for_ref", read_then_newer_commits)
    assert recording._order_for_ref("shared-ref") == newer
    monkeypatch.setattr(recording, "order_for_ref", read)
    assert recording._order_for_ref("shared-ref") == newer  # and it stays remembered


def test_an_order_committed_for_the_broker_replaces_an_older_one_remembered_under_its_reference():
    older = OrderFactory(client_order_id="reused-ref", account="DU1")
    assert recording._order_for_ref("reused-ref") == older  # a report on the older order remembered it
    newer = OrderFactory(client_order_id="reused-ref", account="DU2")
    recording.order_ref_remember(newer)
    assert recording._order_for_ref("reused-ref") == newer


# -- another client's order carrying our orderRef ---------------------------------------------------------
# IB lets any client of the account use any orderRef: reports are told apart by the permanent id, else
# by the order id and the client that placed it (completed orders are reported without either).
def acknowledged():
    """An order the broker acknowledged (ack recorded: order id and client id, no permanent id yet)."""
    order = sent_order()
    services.order_sent_record(
        sent=OrderSent(order_id=order.pk, broker_order_id=7, perm_id=None, client_id=1, actor=BOT)
    )
    return order


def test_the_first_report_with_a_permanent_id_records_it():
    order = acknowledged()
    assert services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700)) is not None
    assert (statuses(order), order.events.order_by("-id").first().perm_id) == (
        [S.PENDING_SUBMIT, S.SUBMITTED, S.SUBMITTED],
        700,
    )
    assert services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700)) is None  # learned once


def test_an_order_the_kill_switch_took_back_is_cancelled_once_and_only_before_the_broker_reported():
    taken_back = acknowledged()
    withdrawn = BrokerOrderWithdrawn(order_ref="ref-1", broker_order_id=7, client_id=1, at=NOW)
    event = services.order_withdrawn_record(withdrawn=withdrawn)
    assert (event.status, event.code, event.source) == (S.CANCELLED, "trading_halted", Source.WORKER)
    assert services.order_withdrawn_record(withdrawn=withdrawn) is None  # once
    assert statuses(taken_back) == [S.PENDING_SUBMIT, S.SUBMITTED, S.CANCELLED]


@pytest.mark.parametrize(
    "withdrawn",
    [
        BrokerOrderWithdrawn(order_ref="ref-1", broker_order_id=7, client_id=77, at=NOW),  # another client's
        BrokerOrderWithdrawn(order_ref="ref-1", broker_order_id=8, client_id=1, at=NOW),  # another order id
    ],
)
def test_a_withdrawal_of_another_order_with_our_reference_changes_nothing(withdrawn):
    order = acknowledged()
    assert services.order_withdrawn_record(withdrawn=withdrawn) is None
    assert statuses(order) == [S.PENDING_SUBMIT, S.SUBMITTED]


def test_an_acknowledgement_written_after_the_brokers_first_report_carries_its_permanent_id():
    # The broker's report usually arrives while the acknowledgement waits for the recorder: one event.
    order = sent_order()
    services.order_sent_record(
        sent=OrderSent(
            order_id=order.pk, broker_order_id=7, perm_id=None, client_id=1, actor=BOT, perm_id_now=lambda: 700
        )
    )
    assert services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700)) is None
    assert (statuses(order), order.events.order_by("-id").first().perm_id) == ([S.PENDING_SUBMIT, S.SUBMITTED], 700)


@pytest.mark.parametrize(
    "foreign",
    [
        {"client_id": 77, "broker_order_id": 7, "perm_id": None},  # same order id, another client
        {"client_id": 77, "broker_order_id": 4, "perm_id": None},
        {"client_id": 1, "broker_order_id": 8, "perm_id": None},  # our client, another order id
        {"client_id": 0, "broker_order_id": 0, "perm_id": 701},  # a completed order: only its permanent id
    ],
)
def test_another_clients_order_with_our_order_ref_leaves_ours_alone(foreign):
    order = acknowledged()
    services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700))
    before = statuses(order)
    assert services.order_status_apply(report=report("ref-1", "Cancelled", remaining=D(0), **foreign)) is None
    assert (
        services.order_status_apply(report=report("ref-1", "Filled", filled=D(10), remaining=D(0), **foreign)) is None
    )
    assert statuses(order) == before


def test_reconciliation_learns_permanent_ids_before_it_reads_completed_orders():
    # Acknowledged, then the connection dropped before any status: the ledger knows no permanent id yet.
    order = acknowledged()
    foreign_done = report("ref-1", "Cancelled", broker_order_id=0, client_id=0, perm_id=701, remaining=D(0))
    ours_working = report("ref-1", "Submitted", perm_id=700)
    services.orders_reconcile(snapshot=snapshot(orders=[foreign_done, ours_working]))
    latest = order.events.order_by("-id").first()
    assert (latest.status, latest.perm_id) == (S.SUBMITTED, 700)


def test_our_completed_order_keeps_the_order_id_and_client_it_was_placed_with():
    order = acknowledged()
    services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700))
    services.order_status_apply(report=report("ref-1", "Inactive", broker_order_id=0, client_id=0, perm_id=700))
    latest = order.events.order_by("-id").first()
    assert (latest.status, latest.broker_order_id, latest.data) == (S.INACTIVE, 7, {})
    assert services.order_client_id(order) == 1


def test_a_fill_of_another_clients_order_with_our_order_ref_is_the_accounts_not_ours():
    order = acknowledged()
    services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700))
    foreign = services.fill_record(execution=execution("e-9", "ref-1", broker_order_id=4, perm_id=701, client_id=77))
    assert (foreign.order, foreign.order_ref) == (None, "ref-1")
    ours = services.fill_record(execution=execution("e-10", "ref-1", broker_order_id=7, perm_id=700, client_id=1))
    assert ours.order == order


# -- terms the broker holds --------------------------------------------------------------------------------
def modified(order, quantity: str, at):
    """A modification recorded at `at` (it reached the connection then)."""
    OrderEventFactory(
        order=order,
        status=S.SUBMITTED,
        broker_order_id=7,
        perm_id=700,
        data={"modified": {"quantity": quantity, "limit_price": "181", "stop_price": None}},
        at=at,
    )


@pytest.mark.parametrize(("changed_ago", "corrected"), [(timedelta(minutes=2), True), (timedelta(seconds=30), False)])
def test_a_modification_the_broker_does_not_hold_is_recorded_as_the_broker_holds_it(changed_ago, corrected):
    """Made on an earlier connection: the broker's terms are recorded. Made on this one: the broker may not
    have had it yet when it answered, so it is left alone."""
    order = acknowledged()
    services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700))
    modified(order, "12", NOW - changed_ago)
    held = report("ref-1", "Submitted", perm_id=700, quantity=D(10), limit_price=D("181.0"))
    counts = services.orders_reconcile(snapshot=snapshot(orders=[held], session_started=NOW - timedelta(minutes=1)))
    assert counts["terms_at_broker"] == int(corrected)
    assert services.order_terms(order)["quantity"] == (10 if corrected else 12)
    if corrected:
        latest = order.events.order_by("-id").first()
        assert (latest.status, latest.code, latest.remaining_quantity) == (S.SUBMITTED, "terms_at_broker", 10)
        assert (
            services.orders_reconcile(snapshot=snapshot(orders=[held], session_started=NOW - timedelta(minutes=1)))[
                "terms_at_broker"
            ]
            == 0
        )


@pytest.mark.parametrize(("asked_after", "corrected"), [(timedelta(seconds=1), True), (-timedelta(seconds=1), False)])
def test_a_modification_the_broker_did_not_confirm_is_recorded_as_the_broker_holds_it(asked_after, corrected):
    """Made on this connection but not confirmed: the broker's terms are recorded, unless the change was recorded
    after the broker was asked (it may have left after the question)."""
    order = acknowledged()
    services.order_status_apply(report=report("ref-1", "Submitted", perm_id=700))
    changed_at = NOW - timedelta(seconds=30)
    modified(order, "12", changed_at)
    held = report("ref-1", "Submitted", perm_id=700, quantity=D(10), limit_price=D("181.0"))
    broker = snapshot(
        orders=[held],
        session_started=NOW - timedelta(minutes=1),
        unconfirmed=("ref-1",),
        asked_at=changed_at + asked_after,
    )
    assert services.orders_reconcile(snapshot=broker)["terms_at_broker"] == int(corrected)
    assert services.order_terms(order)["quantity"] == (10 if corrected else 12)
    audited = AuditEntry.objects.filter(event="order.modification_unconfirmed", target_id=str(order.pk))
    assert audited.exists() == corrected
    if corrected:
        latest = order.events.order_by("-id").first()
        assert (latest.code, latest.remaining_quantity, latest.data["from_broker"]) == (
            "modification_unconfirmed",
            10,
            True,
        )
        assert services.orders_reconcile(snapshot=broker)["terms_at_broker"] == 0  # once


# -- brackets cut off between their legs ----------------------------------------------------------------
def bracket(*, transmitted: bool = False):
    """A bracket whose entry and stop exit were acknowledged; its take-profit, the leg that transmits it,
    was still to be sent (or reached the broker: `transmitted`)."""
    entry = OrderFactory(client_order_id="br", role="entry")
    stop = OrderFactory(client_order_id="br.sl", role="stop_loss", parent=entry, action="SELL")
    take = OrderFactory(client_order_id="br.tp", role="take_profit", parent=entry, action="SELL")
    for i, leg in enumerate((entry, stop, take)):
        OrderEventFactory(order=leg, status=S.PENDING_SUBMIT)
        if leg is not take:
            OrderEventFactory(order=leg, status=S.SUBMITTED, broker_order_id=7 + i)
    if transmitted:
        OrderEventFactory(order=take, status=S.SUBMITTED, broker_order_id=9, perm_id=900)
    return entry, stop, take


def test_a_bracket_an_earlier_process_left_without_its_last_leg_is_withdrawn_leg_by_leg():
    entry, stop, take = bracket()  # the process died between the legs; the broker holds none of them now
    counts = services.orders_reconcile(snapshot=snapshot(session_started=NOW - timedelta(minutes=1)))
    assert (counts["bracket_incomplete"], counts["not_at_broker"], counts["unknown"]) == (3, 0, 0)
    latest = {leg.role: leg.events.order_by("-id").first() for leg in (entry, stop, take)}
    assert {role: (e.status, e.code, e.source) for role, e in latest.items()} == {
        "entry": (S.CANCELLED, "bracket_incomplete", "worker"),
        "stop_loss": (S.CANCELLED, "bracket_incomplete", "worker"),
        "take_profit": (S.REJECTED, "bracket_incomplete", "worker"),
    }
    assert latest["entry"].reason.endswith(
        "the broker does not hold this leg; it is not working and is never sent later."
    )
    assert latest["take_profit"].reason.endswith("this leg was not sent, and is never sent later.")
    assert services.orders_reconcile(snapshot=snapshot())["bracket_incomplete"] == 0  # once


def test_a_bracket_whose_last_leg_reached_the_broker_is_left_to_the_broker():
    entry, stop, take = bracket(transmitted=True)
    assert services.orders_reconcile(snapshot=snapshot())["bracket_incomplete"] == 0
    assert [statuses(leg)[-1] for leg in (entry, stop, take)] == [S.SUBMITTED] * 3


@pytest.mark.parametrize(("now_on", "withdrawn"), [("conn-1", False), ("conn-2", True)])
def test_a_bracket_this_process_sent_is_withdrawn_only_once_its_connection_is_gone(monkeypatch, now_on, withdrawn):
    """On the connection it went out on, its last leg may still be on its way; on another one, never."""
    entry, stop, take = bracket()
    monkeypatch.setattr(recording, "PROCESS_STARTED_AT", NOW - timedelta(hours=1))
    brackets.bracket_entry_sent(sent(entry, connection="conn-1"))
    counts = services.orders_reconcile(snapshot=snapshot(connection=now_on))
    assert counts["bracket_incomplete"] == (3 if withdrawn else 0)
    assert [statuses(leg)[-1] for leg in (entry, stop, take)] == (
        [S.CANCELLED, S.CANCELLED, S.REJECTED] if withdrawn else [S.SUBMITTED, S.SUBMITTED, S.PENDING_SUBMIT]
    )


def test_the_broker_confirming_a_withdrawn_leg_s_cancel_before_its_cancel_pending_keeps_the_reason():
    # The sender settled the unsent leg, then cancelled the sent entry; the broker's confirmation was
    # recorded before the entry's own cancel_pending.
    entry, _, take = bracket()
    OrderEventFactory(order=take, status=S.REJECTED, code="bracket_incomplete", reason=brackets.NOT_SENT)
    services.order_status_apply(report=report("br", "Cancelled", broker_order_id=7))
    latest = entry.events.order_by("-id").first()
    assert (latest.status, latest.code, latest.reason) == (S.CANCELLED, "bracket_incomplete", brackets.HELD_CANCELLED)


def test_a_bracket_leg_cancelled_outside_a_withdrawal_says_what_the_broker_said():
    entry, _, _ = bracket()
    services.order_status_apply(report=report("br", "Cancelled", broker_order_id=7, error_code=202))
    latest = entry.events.order_by("-id").first()
    assert (latest.status, latest.code) == (S.CANCELLED, "202")


def test_the_broker_confirming_a_withdrawn_leg_s_cancel_keeps_the_reason():
    entry, _, _ = bracket()
    OrderEventFactory(order=entry, status=S.CANCEL_PENDING, code="bracket_incomplete", reason=brackets.HELD_CANCELLED)
    services.order_status_apply(report=report("br", "Cancelled", broker_order_id=7))
    latest = entry.events.order_by("-id").first()
    assert (latest.status, latest.code, latest.reason) == (S.CANCELLED, "bracket_incomplete", brackets.HELD_CANCELLED)


@pytest.mark.parametrize(
    ("ref", "transmitted", "rechecks"),
    [("br.tp", False, 1), ("br.sl", False, 0), ("br.tp", True, 0)],
    ids=["transmitting leg refused", "another leg", "exit of a transmitted bracket"],
)
def test_a_bracket_s_transmitting_leg_the_broker_refuses_has_the_broker_s_orders_checked(
    django_capture_on_commit_callbacks, ref, transmitted, rechecks
):
    """The connection stays up: nothing else would release the legs the broker holds untransmitted."""
    bracket(transmitted=transmitted)
    refused = report(ref, "Inactive", broker_order_id=9 if ref == "br.tp" else 8, perm_id=900 if transmitted else None)
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.order_status_apply(report=refused) is not None
    assert [c.__name__ for c in callbacks].count("_orders_recheck") == rechecks


def test_a_bracket_whose_transmitting_leg_the_broker_refused_is_withdrawn_on_its_own_connection(monkeypatch):
    entry, stop, take = bracket()
    monkeypatch.setattr(recording, "PROCESS_STARTED_AT", NOW - timedelta(hours=1))
    brackets.bracket_entry_sent(sent(entry, connection="conn-1"))
    refused = report("br.tp", "Inactive", broker_order_id=9, perm_id=None)
    services.order_status_apply(report=refused)
    counts = services.orders_reconcile(snapshot=snapshot(orders=[refused], connection="conn-1"))
    assert counts["bracket_incomplete"] == 3
    latest = {leg.role: leg.events.order_by("-id").first() for leg in (entry, stop, take)}
    assert {role: (e.status, e.code) for role, e in latest.items()} == dict.fromkeys(
        ("entry", "stop_loss", "take_profit"), (S.CANCELLED, "bracket_incomplete")
    )
    assert S.INACTIVE in statuses(take)  # the broker's refusal stays in the leg's history
