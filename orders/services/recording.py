"""Broker events into the ledger (called by the recorder thread) and reconciliation after each connect."""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from audit import events
from audit.readable import UNREADABLE_ERRORS, locate, readable_rows
from audit.services import audit_record, ledger_write_lock
from brokers.adapter import (
    BrokerCommission,
    BrokerExecution,
    BrokerOrderStatus,
    BrokerOrderWithdrawn,
    BrokerSnapshot,
)
from ibkrgw import metrics
from ibkrgw.actors import Actor, Source
from ibkrgw.errors import ErrorCode
from orders import publish
from orders.models import Commission, Fill, Order, OrderEvent
from orders.models import OrderStatus as S
from orders.selectors import (
    commission_recorded,
    fill_by_exec_id,
    fill_recorded,
    order_for_ref,
    order_latest_event,
    order_row,
)
from orders.services.brackets import bracket_leg_refused, brackets_incomplete_withdraw, withdrawal_of
from orders.services.common import late_send_window, order_event_append, order_terms_changed, terms_json
from orders.state import from_ib
from orders.types import OrderSent

logger = logging.getLogger(__name__)
PROCESS_STARTED_AT = timezone.now()


# -- broker events (called by the recorder thread) ---------------------------------------------
_orders_by_ref: OrderedDict[str, Order] = OrderedDict()
_orders_by_ref_lock = threading.Lock()  # the recorder reads it; the pipeline adds the orders it commits
_ORDERS_BY_REF_MAX = 10_000


def _order_for_ref(order_ref: str) -> Order | None:
    """The order a broker report names by orderRef. Order rows never change, so they are remembered."""
    if not order_ref:
        return None
    with _orders_by_ref_lock:
        order = _orders_by_ref.get(order_ref)
    if order is not None:
        return order
    order = order_for_ref(order_ref)
    if order is not None:
        # The pipeline may have committed (and remembered) a newer order with this reference meanwhile.
        order = _remember(order_ref, order, replace=False)
    return order


def _remember(order_ref: str, order: Order, *, replace: bool) -> Order:
    """Remember `order` for `order_ref` (or, with `replace=False`, keep one remembered already); returns
    the order remembered."""
    with _orders_by_ref_lock:
        if replace or order_ref not in _orders_by_ref:
            _orders_by_ref[order_ref] = order
        _orders_by_ref.move_to_end(order_ref)
        kept = _orders_by_ref[order_ref]
        if len(_orders_by_ref) > _ORDERS_BY_REF_MAX:
            _orders_by_ref.popitem(last=False)
        return kept


def order_ref_remember(order: Order) -> None:
    """An order just committed is the newest carrying its orderRef: the broker's reports on it need no read.
    Call it once the order's transaction has committed.

    What is remembered is a bare copy of the row: the caller's instance goes on to collect the order's
    events and fills for its answer, which ten thousand remembered orders must not keep alive."""
    bare = copy.copy(order)  # Django copies the instance state too
    bare.recorded = None
    bare._state.fields_cache = {}  # nor the related rows it holds (a bracket exit holds its entry)
    _remember(order.client_order_id, bare, replace=True)


def order_refs_forget(order_ref: str | None = None) -> None:
    """Forget a remembered orderRef (a new order now carries it), or all of them."""
    with _orders_by_ref_lock:
        if order_ref is None:
            _orders_by_ref.clear()
        else:
            _orders_by_ref.pop(order_ref, None)


def _status_is_news(latest: OrderEvent | None, status: str, report: BrokerOrderStatus) -> bool:
    return latest is None or not (
        latest.status == status
        and latest.filled_quantity == report.filled
        and (not report.broker_order_id or latest.broker_order_id == report.broker_order_id)
        # The permanent id is learned once: it tells this order from another client's with the same orderRef.
        and (latest.perm_id is not None or not report.perm_id)
    )


_STOPS = (S.CANCELLED, S.INACTIVE, S.REJECTED)  # how the broker stops an order (or refuses it): its reason is kept


def _explains_stop(latest: OrderEvent | None, status: str, report: BrokerOrderStatus) -> bool:
    """Whether the report brings IB's error on a stop already recorded without it: IB usually reports the
    status first and the error (the rejection, its cancel's reason) right after."""
    return (
        latest is not None
        and report.error_code is not None
        and status in _STOPS
        and latest.status == status
        and latest.source == Source.WORKER
        and not latest.code
    )


def _placed_by(order: Order, latest: OrderEvent) -> int | None:
    """The IB client id the order was placed through, as its events recorded it."""
    recorded = (latest.data or {}).get("client_id")
    if recorded is not None:
        return int(recorded)
    for data in OrderEvent.objects.filter(order=order).order_by("-id").values_list("data", flat=True):
        if data and data.get("client_id") is not None:
            return int(data["client_id"])
    return None


def _same_broker_order(
    order: Order, latest: OrderEvent | None, *, perm_id: int | None, broker_order_id: int | None, client_id: int | None
) -> bool:
    """Whether a report naming this order's orderRef is about this order, not about another order that
    carries the same reference (IB lets any client of the account use any orderRef). Decided by what
    both sides know: the permanent id, else the order id and the client that placed it (completed
    orders come with neither order id nor client id)."""
    if latest is None:
        return True
    if perm_id and latest.perm_id:
        return perm_id == latest.perm_id
    if broker_order_id and latest.broker_order_id:
        if broker_order_id != latest.broker_order_id:
            return False
        placed_by = _placed_by(order, latest)
        return client_id is None or placed_by is None or client_id == placed_by
    return True


def order_status_apply(*, report: BrokerOrderStatus) -> OrderEvent | None:
    """Append the broker's status if it changes anything. Safe to call twice with one report.

    Runs in a plain transaction so the recorder can group a burst of events into one commit.
    """
    status = from_ib(
        report.status,
        filled=report.filled,
        remaining=report.remaining,
        error_code=report.error_code,
        refused=report.refused,
    )
    if status is None:
        return None
    order = _order_for_ref(report.order_ref)
    if order is None:
        return None
    with transaction.atomic(savepoint=False):  # in a burst, part of the recorder's transaction
        ledger_write_lock()  # the latest event read below stays the latest until this commits
        latest = order_latest_event(order)
        if latest is not None and latest.status == S.SIMULATED:
            logger.error("broker reports order %s that was recorded as simulated", order.pk)
            return None
        ids = {"perm_id": report.perm_id, "broker_order_id": report.broker_order_id, "client_id": report.client_id}
        if not _same_broker_order(order, latest, **ids):
            return None  # another client's order with our orderRef
        explains = _explains_stop(latest, status, report)
        if not explains and not _status_is_news(latest, status, report):
            return None
        reason, code = (report.reason, str(report.error_code or "")) if status in _STOPS else ("", "")
        withdrawal = withdrawal_of(order, latest) if status == S.CANCELLED and not explains else None
        if withdrawal is not None:
            reason, code = withdrawal  # the broker confirms our withdrawal of a bracket: say why it was made
        appended = order_event_append(
            order,
            status=status,
            source=Source.WORKER,
            reason=reason,
            code=code,
            # A completed order is reported with neither order id nor client id: keep the ones recorded.
            broker_order_id=report.broker_order_id or None,
            perm_id=report.perm_id,
            filled=report.filled,
            remaining=report.remaining,
            average_fill_price=report.average_fill_price,
            data={"client_id": report.client_id} if report.client_id is not None and report.broker_order_id else None,
            strict=False,
            latest=latest,
            restate=explains,
        )
        if appended is not None and not explains:
            bracket_leg_refused(order, status=status, before=latest.status if latest is not None else None)
        return appended


WITHDRAWN_BY_HALT = (
    "The kill switch took this order back before it left the gateway (it was waiting for IB's message "
    "budget): the broker never received it."
)


def order_withdrawn_record(*, withdrawn: BrokerOrderWithdrawn) -> OrderEvent | None:
    """A sent order the kill switch took back before it reached the broker: `cancelled`, code trading_halted."""
    order = _order_for_ref(withdrawn.order_ref)
    if order is None:
        return None
    with transaction.atomic(savepoint=False):  # in a burst, part of the recorder's transaction
        ledger_write_lock()
        latest = order_latest_event(order)
        if latest is None or latest.status not in (S.PENDING_SUBMIT, S.SUBMITTED, S.CANCEL_PENDING):
            return None
        ids = {"perm_id": None, "broker_order_id": withdrawn.broker_order_id, "client_id": withdrawn.client_id}
        if not _same_broker_order(order, latest, **ids):
            return None
        return order_event_append(
            order,
            status=S.CANCELLED,
            source=Source.WORKER,
            code=ErrorCode.TRADING_HALTED,
            reason=WITHDRAWN_BY_HALT,
            broker_order_id=withdrawn.broker_order_id,
            strict=False,
            latest=latest,
        )


def fill_record(*, execution: BrokerExecution) -> Fill | None:
    """Record one execution once (deduplicated by exec_id). Returns None when already recorded."""
    with transaction.atomic(savepoint=False):  # in a burst, part of the recorder's transaction
        if fill_recorded(execution.exec_id):
            return None
        order = _fill_order(execution)
        fill = Fill.objects.create(
            exec_id=execution.exec_id,
            order=order,
            account=execution.account,
            con_id=execution.con_id,
            symbol=execution.symbol,
            side=execution.side,
            quantity=execution.quantity,
            price=execution.price,
            executed_at=execution.executed_at,
            exchange=execution.exchange,
            broker_order_id=execution.broker_order_id,
            perm_id=execution.perm_id,
            order_ref=execution.order_ref,
        )
        entry = audit_record(
            event=events.FILL_RECORDED,
            actor=Actor.system(),
            target_type="fill",
            target_id=fill.exec_id,
            data={
                "order_id": str(order.pk) if order else None,
                "side": fill.side,
                "quantity": str(fill.quantity),
                "price": str(fill.price),
                "symbol": fill.symbol,
            },
        )
        transaction.on_commit(lambda: publish.fill(fill_id=fill.pk, seq=entry.seq))
        transaction.on_commit(metrics.FILLS.inc)
    return fill


def _fill_order(execution: BrokerExecution) -> Order | None:
    """The order an execution fills, or None: the account's fill, not one of ours (or not one we can read)."""
    ids = {"perm_id": execution.perm_id, "broker_order_id": execution.broker_order_id}
    try:
        order = _order_for_ref(execution.order_ref)
        if order is not None and not _same_broker_order(
            order, order_latest_event(order), **ids, client_id=execution.client_id
        ):
            order = None  # another client's order with our orderRef: the account's fill, not this order's
    except UNREADABLE_ERRORS:
        # A row of the order was rewritten behind the application's back. The fill is the broker's fact and
        # is recorded all the same, unlinked, its orderRef kept: dropping it would lose it for good (IB lists
        # a day's executions only that day). The row is named for the operator.
        rows = locate(
            Order,
            list(Order.objects.filter(client_order_id=execution.order_ref).values_list("pk", flat=True)),
            using=DEFAULT_DB_ALIAS,
        )
        logger.error(
            "fill %s of orderRef %s recorded without its order, which cannot be read: %s (run manage.py audit_verify)",
            execution.exec_id,
            execution.order_ref,
            "; ".join(str(row) for row in rows) or "no row named",
        )
        order = None
    return order


def commission_record(*, commission: BrokerCommission) -> Commission | None:
    with transaction.atomic(savepoint=False):  # in a burst, part of the recorder's transaction
        fill = fill_by_exec_id(commission.exec_id)
        if fill is None or commission_recorded(commission.exec_id):
            return None
        row = Commission.objects.create(
            fill=fill,
            exec_id=commission.exec_id,
            commission=commission.commission,
            currency=commission.currency,
            realized_pnl=commission.realized_pnl,
        )
        entry = audit_record(
            event=events.COMMISSION_RECORDED,
            actor=Actor.system(),
            target_type="fill",
            target_id=fill.exec_id,
            data={"commission": str(row.commission), "currency": row.currency},
        )
        transaction.on_commit(lambda: publish.fill(fill_id=fill.pk, seq=entry.seq))
    return row


def _orders_gone_from_broker(snapshot: BrokerSnapshot) -> int:
    """Orders the broker acknowledged on an earlier connection and now reports neither working nor
    completed (a restarted gateway, a day order gone overnight) are no longer working anywhere.

    A report or execution that carries an order's orderRef but is another client's order (IB lets any client
    use any orderRef) does not keep it: it is told apart as the recorder tells it apart."""
    if snapshot.session_started is None:
        return 0
    from orders.selectors import order_queryset

    by_ref: dict[str, list[BrokerOrderStatus | BrokerExecution]] = {}
    reports: list[BrokerOrderStatus | BrokerExecution] = [*snapshot.orders, *snapshot.executions]
    for reported in reports:
        by_ref.setdefault(reported.order_ref, []).append(reported)
    resolved = 0
    gone = order_queryset().filter(current_status__in=(S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING, S.INACTIVE))
    for order in readable_rows(gone, log=logger, leaving_out="reconciliation leaves out a working order"):
        # Read outside a write transaction: most working orders are still reported, and need none. An event
        # appended meanwhile is this connection's, which the check below leaves alone anyway.
        same_ref = by_ref.get(order.client_order_id, ())
        if same_ref:
            known = order_latest_event(order)
            if any(
                _same_broker_order(
                    order, known, perm_id=r.perm_id, broker_order_id=r.broker_order_id, client_id=r.client_id
                )
                for r in same_ref
            ):
                continue  # the broker still reports it
        with transaction.atomic(durable=True):
            latest = order_latest_event(order)
            if latest is None or latest.at >= snapshot.session_started:
                continue  # acknowledged on this connection: the broker's own reports will follow
            if order_event_append(
                order,
                status=S.CANCELLED,
                source=Source.WORKER,
                code="not_at_broker",
                reason="After reconnecting, the broker reports this order neither working nor completed: "
                "it no longer holds it.",
                audit_event=events.ORDER_STATUS_CHANGED,
                strict=False,
            ):
                resolved += 1
    return resolved


# The prices IB works as sent, by the ledger's order type; a trailing order's prices move at the broker,
# so only its quantity counts.
_LIMITED, _STOPPED = ("LMT", "STP_LMT", "LOC"), ("STP", "STP_LMT")


def _terms_as_the_broker_holds(snapshot: BrokerSnapshot) -> int:
    """Working orders whose quantity or prices at the broker differ from the ledger's (a modification
    that never reached it: lost with the connection, or refused) are recorded with the broker's terms.

    A modification made on the connection the snapshot came through is left alone (the broker may have
    answered the snapshot before it received the change), unless IB refused it (`change_refused`: the
    broker's terms are its answer to that change, recorded with IB's code and text) or did not confirm it in
    time and it was recorded before the broker was asked (`snapshot.unconfirmed`)."""
    if snapshot.session_started is None:
        return 0
    corrected = 0
    for report in snapshot.orders:
        with _unless_unreadable(report.order_ref, "the broker's terms"):
            corrected += _terms_of_one(report, snapshot)
    return corrected


def _terms_of_one(report: BrokerOrderStatus, snapshot: BrokerSnapshot) -> int:
    if report.quantity is None or from_ib(report.status, filled=report.filled, remaining=report.remaining) not in (
        S.SUBMITTED,
        S.PARTIALLY_FILLED,
    ):
        return 0
    order = _order_for_ref(report.order_ref)
    if order is None:
        return 0
    terms, changed_at = order_terms_changed(order)
    started = snapshot.session_started
    asked = snapshot.asked_at if report.order_ref in snapshot.unconfirmed else None
    unconfirmed = changed_at is not None and asked is not None and changed_at < asked
    answered = unconfirmed or report.change_refused  # the broker's terms answer a change made on this connection
    if changed_at is not None and (started is None or changed_at >= started) and not answered:
        return 0
    held = dict(terms, quantity=report.quantity)
    if order.order_type in _LIMITED and report.limit_price is not None:
        held["limit_price"] = report.limit_price
    if order.order_type in _STOPPED and report.stop_price is not None:
        held["stop_price"] = report.stop_price
    if held == terms:
        return 0  # the common case: read only, no transaction
    with transaction.atomic(durable=True):
        ledger_write_lock()
        latest = order_latest_event(order)
        ids = {"perm_id": report.perm_id, "broker_order_id": report.broker_order_id, "client_id": report.client_id}
        if latest is None or latest.status not in (S.SUBMITTED, S.PARTIALLY_FILLED):
            return 0
        if not _same_broker_order(order, latest, **ids) or order_terms_changed(order) != (terms, changed_at):
            return 0  # another client's order, or modified meanwhile
        audit_event = events.ORDER_MODIFIED
        if report.change_refused:
            code, reason = str(report.error_code or ""), report.reason
        elif unconfirmed:
            code, audit_event = "modification_unconfirmed", events.ORDER_MODIFICATION_UNCONFIRMED
            reason = (
                "The broker did not confirm the modification in time and holds this order with other terms "
                "than recorded: recorded as the broker holds it."
            )
        else:
            code = "terms_at_broker"
            reason = (
                "After reconnecting, the broker holds this order with other terms than recorded "
                "(a modification did not reach it): recorded as the broker holds it."
            )
        order_event_append(
            order,
            status=latest.status,
            source=Source.WORKER,
            code=code,
            reason=reason,
            data={"modified": terms_json(held), "from_broker": True},
            remaining=max(report.quantity - latest.filled_quantity, Decimal(0)),
            audit_event=audit_event,
            strict=False,
            latest=latest,
        )
        return 1
    return 0


def order_sent_record(*, sent: OrderSent) -> None:
    """Append `submitted` with the broker's order id (unless a broker status already moved the order on)."""
    with transaction.atomic(savepoint=False):  # in a burst, part of the recorder's transaction
        ledger_write_lock()  # the latest event read below stays the latest until this commits
        # The sender hands over the committed row it sent; read it only when it did not.
        order = sent.order if sent.order is not None else order_row(sent.order_id)
        if order is None:  # sent orders were committed before the send
            raise Order.DoesNotExist(f"order {sent.order_id} is not in the ledger")
        latest = order_latest_event(order)
        if latest is not None and latest.status == S.PENDING_SUBMIT:
            # The broker has often reported the permanent id by now: recorded here, its report adds no event.
            perm_id = sent.perm_id or (sent.perm_id_now() if sent.perm_id_now is not None else None)
            order_event_append(
                order,
                status=S.SUBMITTED,
                actor=sent.actor,
                source=sent.actor.source,
                broker_order_id=sent.broker_order_id,
                perm_id=perm_id,
                data={"client_id": sent.client_id},
                audit_event=events.ORDER_SENT,
                latest=latest,
            )
        else:
            audit_record(
                event=events.ORDER_SENT,
                actor=sent.actor,
                target_type="order",
                target_id=str(order.pk),
                data={"broker_order_id": sent.broker_order_id, "client_id": sent.client_id},
            )
        transaction.on_commit(sent.written.set)


# -- a ledger row written behind the application's back must not stop a reconciliation ------------------
@contextmanager
def _unless_unreadable(order_ref: str, what: str) -> Iterator[None]:
    """Leave out (and name) what concerns the order `order_ref` when one of its ledger rows cannot be read;
    any other failure is raised as it was."""
    try:
        yield
    except UNREADABLE_ERRORS as exc:
        pks = list(Order.objects.filter(client_order_id=order_ref).values_list("pk", flat=True)) if order_ref else []
        named = locate(Order, pks, using=DEFAULT_DB_ALIAS)
        if not named:
            raise
        for row in named:
            logger.error("reconciliation leaves out %s of %s: %s (run manage.py audit_verify)", what, order_ref, row)
        del exc


def _order_ref_of_exec(snapshot: BrokerSnapshot, exec_id: str) -> str:
    return next((e.order_ref for e in snapshot.executions if e.exec_id == exec_id), "")


def orders_reconcile(*, snapshot: BrokerSnapshot) -> dict[str, int]:
    """Bring the ledger up to date with the broker after a (re)connect.

    Appends missing status events, fills and commissions (deduplicated), and marks intents the
    broker never saw as `unknown` (never re-sent). Safe to run any number of times.
    """
    counts = {"status_events": 0, "fills": 0, "commissions": 0, "unknown": 0}
    seen_refs = {o.order_ref for o in snapshot.orders} | {e.order_ref for e in snapshot.executions}
    # Reports naming an order id first: they teach the ledger its orders' permanent ids, by which the
    # completed orders (reported without order id or client id) are told from other clients' ones.
    for report in sorted(snapshot.orders, key=lambda report: not report.broker_order_id):
        with _unless_unreadable(report.order_ref, "the broker's status"):
            if order_status_apply(report=report):
                counts["status_events"] += 1
    for execution in snapshot.executions:
        with _unless_unreadable(execution.order_ref, f"execution {execution.exec_id}"):
            if fill_record(execution=execution):
                counts["fills"] += 1
    for commission in snapshot.commissions:
        with _unless_unreadable(_order_ref_of_exec(snapshot, commission.exec_id), "a commission"):
            if commission_record(commission=commission):
                counts["commissions"] += 1
    # Intents this process can't still be sending: made before it started, or long ago.
    grace = timezone.now() - late_send_window()
    from orders.selectors import order_queryset

    # Before the orders gone from the broker: a withdrawn bracket's legs say why they stopped.
    counts["bracket_incomplete"] = brackets_incomplete_withdraw(
        snapshot=snapshot, process_started_at=PROCESS_STARTED_AT
    )
    counts["not_at_broker"] = _orders_gone_from_broker(snapshot)
    counts["terms_at_broker"] = _terms_as_the_broker_holds(snapshot)
    stuck = order_queryset().filter(current_status=S.PENDING_SUBMIT).exclude(client_order_id__in=seen_refs)
    unseen = "reconciliation leaves out an order recorded but not seen at the broker"
    for order in readable_rows(stuck, log=logger, leaving_out=unseen):
        if order.created_at >= PROCESS_STARTED_AT and order.created_at >= grace:
            continue
        with transaction.atomic(durable=True):
            if order_event_append(
                order,
                status=S.UNKNOWN,
                source=Source.WORKER,
                audit_event=events.ORDER_UNKNOWN,
                reason="Recorded but not seen at the broker: it may never have been sent. "
                "Not re-sent automatically; check and place again if needed.",
                strict=False,
            ):
                counts["unknown"] += 1
    with transaction.atomic(durable=True):
        audit_record(event=events.BROKER_RECONCILED, actor=Actor.system(), target_type="gateway", data=counts)
    return counts
