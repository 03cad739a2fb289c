"""Brackets cut off between their legs are withdrawn, never completed later.

IB holds a bracket's entry (and an exit sent before the last) untransmitted until the last leg arrives
with transmit=True. A bracket whose sending stopped before that (the connection lost between legs, a leg
that could not be sent, the process gone) would leave legs held at the broker for good while the ledger
shows them working. Its remaining legs are never sent later (on another connection, with prices that
may no longer be current). Instead every leg ends with the code `bracket_incomplete`: the legs the
broker holds are cancelled there, the ones it does not hold are `cancelled` (acknowledged before) or
`rejected` (never acknowledged).

At the moment a leg cannot be sent, the sender stops (`bracket_send_stopped`); what the broker holds is
settled by reconciliation (`brackets_incomplete_withdraw`), which only looks at brackets whose sending
is over: stopped by the sender, sent on a connection that is gone, made by an earlier process, or whose
transmitting leg the broker refused (rejected: the recorder then has the broker's orders re-checked,
`bracket_leg_refused`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from audit import events
from brokers import runtime
from brokers.adapter import BrokerOrderStatus, BrokerSnapshot
from ibkrgw.actors import Actor, Source
from ibkrgw.errors import GatewayError
from orders.models import Order, OrderEvent
from orders.models import OrderStatus as S
from orders.selectors import bracket_entries_open, order_latest_event
from orders.services.common import order_event_append
from orders.state import TERMINAL, from_ib
from orders.types import OrderSent

logger = logging.getLogger(__name__)

BRACKET_INCOMPLETE = "bracket_incomplete"
_WHY = "The bracket was not sent in full (its sending stopped before the last leg transmitted it)"
NOT_SENT = f"{_WHY}: this leg was not sent, and is never sent later."
ENTRY_NOT_PLACED = "The bracket's entry was not placed, so this exit was not sent."
HELD_CANCELLED = f"{_WHY}: the broker held this leg untransmitted; it is cancelled there."
NOT_HELD = f"{_WHY}: the broker does not hold this leg; it is not working and is never sent later."
_ACCEPTED = (S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED)  # the broker took the leg (it transmitted the bracket)
_HELD = (S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING)
# How a leg the broker did not take ends: rejected (IB: Inactive, or Cancelled with the rejection's error).
_REFUSED = (S.REJECTED, S.INACTIVE, S.CANCELLED)

# The connection each bracket entry this process sent went out on (its legs follow it on that one only).
_SENT_ON: OrderedDict = OrderedDict()
_SENT_ON_LOCK = threading.Lock()
_SENT_ON_MAX = 10_000


def legs_in_send_order(children) -> list[Order]:
    """A bracket's exits in the order they are sent: the last one transmits the bracket."""
    return sorted(children, key=lambda child: child.role)


def bracket_entry_sent(entry: OrderSent) -> None:
    with _SENT_ON_LOCK:
        _SENT_ON[entry.order_id] = entry.connection
        if len(_SENT_ON) > _SENT_ON_MAX:
            _SENT_ON.popitem(last=False)


# -- the sender --------------------------------------------------------------------------------------
def legs_not_sent(legs: list[Order], actor: Actor, *, reason: str = NOT_SENT) -> None:
    """Legs never sent, and never to be: `rejected` with code bracket_incomplete, in one transaction."""
    with transaction.atomic(durable=True):
        for leg in legs:
            order_event_append(
                leg,
                status=S.REJECTED,
                actor=actor,
                source=actor.source,
                code=BRACKET_INCOMPLETE,
                reason=reason,
                audit_event=events.ORDER_REJECTED,
                strict=False,
            )


def bracket_send_stopped(*, sent: list[OrderSent], unsent: list[Order], actor: Actor) -> None:
    """A leg could not be sent (or its outcome is unknown): the legs after it are never sent, and the legs
    already sent (held by the broker, untransmitted) are cancelled now if the connection takes the cancel,
    else by the reconciliation after the reconnect. A leg whose outcome is unknown is settled by a
    re-check of the broker's orders. Runs on the order pipeline's thread."""
    legs_not_sent(unsent, actor)
    for ack in sent:
        try:
            runtime.adapter().order_cancel(broker_order_id=ack.broker_order_id)
        except GatewayError as exc:
            logger.warning("bracket leg %s: cancel not sent (%s); reconciliation cancels it", ack.order_id, exc)
            continue
        with transaction.atomic(durable=True):
            order_event_append(
                ack.order,
                status=S.CANCEL_PENDING,
                actor=actor,
                source=actor.source,
                code=BRACKET_INCOMPLETE,
                reason=HELD_CANCELLED,
                # The recorder may not have written the acknowledgement yet: the ids are on this event too.
                broker_order_id=ack.broker_order_id,
                data={"client_id": ack.client_id},
                audit_event=events.ORDER_CANCEL_REQUESTED,
                strict=False,
            )
    _orders_recheck()


# -- the recorder ------------------------------------------------------------------------------------
def withdrawal_of(order: Order, latest: OrderEvent | None) -> tuple[str, str] | None:
    """(reason, code) for the broker's cancel of a bracket leg while its bracket is being withdrawn: the
    withdrawal is why it was cancelled. The broker's confirmation may be recorded before the leg's own
    `cancel_pending` (the sender cancels a sent leg right after it settled the unsent ones)."""
    if latest is not None and latest.code == BRACKET_INCOMPLETE:
        return latest.reason, latest.code
    if not order.role:
        return None
    root = order.parent_id or order.pk
    withdrawing = OrderEvent.objects.filter(
        Q(order_id=root) | Q(order__parent_id=root), code=BRACKET_INCOMPLETE
    ).exists()
    return (HELD_CANCELLED, BRACKET_INCOMPLETE) if withdrawing else None


def bracket_leg_refused(order: Order, *, status: str, before: str | None) -> None:
    """The recorder recorded `status` for `order`: when that ends the leg that transmits a bracket without
    the broker taking it, the broker still holds the bracket's other legs untransmitted, and nothing else
    would release them while the connection stays up. Has the broker's orders re-checked once the
    recorder's transaction commits: that reconciliation withdraws the bracket (no broker call here)."""
    if order.parent_id is None or status not in _REFUSED or before in _REFUSED:
        return
    last = legs_in_send_order(Order.objects.filter(parent_id=order.parent_id))[-1]
    if last.pk == order.pk and not _transmitted(order, {}):  # an exit of a working bracket ended: no news
        transaction.on_commit(_orders_recheck)


def _orders_recheck() -> None:
    try:
        runtime.adapter().orders_recheck()
    except GatewayError as exc:  # not connected: the reconnect reconciles
        logger.warning("bracket: no re-check of the broker's orders (%s)", exc)


# -- reconciliation ----------------------------------------------------------------------------------
def brackets_incomplete_withdraw(*, snapshot: BrokerSnapshot, process_started_at: datetime) -> int:
    """Withdraw every bracket whose sending is over and whose last leg never reached the broker: cancel at
    the broker the legs it holds, settle the others. Returns the number of legs settled or cancelled."""
    reports: dict[str, list[BrokerOrderStatus]] = {}
    for report in snapshot.orders:
        reports.setdefault(report.order_ref, []).append(report)
    done = 0
    for entry in bracket_entries_open():
        legs = [entry, *legs_in_send_order(entry.children.all())]
        if not _sending_over(entry, legs, snapshot, process_started_at) or _transmitted(legs[-1], reports):
            continue
        logger.warning("bracket %s was not sent in full: withdrawing its legs", entry.client_order_id)
        for leg in legs:
            done += _withdraw_leg(leg, reports.get(leg.client_order_id, []))
    return done


def _sending_over(entry: Order, legs: list[Order], snapshot: BrokerSnapshot, process_started_at: datetime) -> bool:
    """No leg of it can still be on its way: the sender stopped it, the connection its entry went out on is
    gone (its other legs never go out on another), an earlier process made it, or its transmitting leg
    ended (whether the broker ever took that leg, `_transmitted` tells)."""
    if OrderEvent.objects.filter(order__in=legs, code=BRACKET_INCOMPLETE).exists():
        return True
    latest = order_latest_event(legs[-1])
    if latest is not None and latest.status in _REFUSED:
        return True
    with _SENT_ON_LOCK:
        sent_on = _SENT_ON.get(entry.pk)
    if sent_on is not None:
        return sent_on != snapshot.connection
    return entry.created_at < process_started_at


def _transmitted(last: Order, reports: dict[str, list[BrokerOrderStatus]]) -> bool:
    """Whether the broker ever took the leg that transmits the bracket (then it released the whole group)."""
    if any(
        from_ib(r.status, filled=r.filled, remaining=r.remaining) in _ACCEPTED
        for r in reports.get(last.client_order_id, [])
    ):
        return True
    # Only the broker's own reports bring the permanent id (the acknowledgement records it once one has).
    return OrderEvent.objects.filter(order=last, perm_id__isnull=False, status__in=_ACCEPTED).exists()


def _withdraw_leg(leg: Order, reports: list[BrokerOrderStatus]) -> int:
    latest = order_latest_event(leg)
    if latest is None or latest.status in TERMINAL:
        return 0
    held = [
        r for r in reports if r.broker_order_id and from_ib(r.status, filled=r.filled, remaining=r.remaining) in _HELD
    ]
    if not held:
        never_acknowledged = latest.status in (S.PENDING_SUBMIT, S.UNKNOWN)
        with transaction.atomic(durable=True):
            appended = order_event_append(
                leg,
                status=S.REJECTED if never_acknowledged else S.CANCELLED,
                source=Source.WORKER,
                code=BRACKET_INCOMPLETE,
                reason=NOT_SENT if never_acknowledged else NOT_HELD,
                audit_event=events.ORDER_REJECTED if never_acknowledged else events.ORDER_STATUS_CHANGED,
                strict=False,
            )
        return int(appended is not None)
    try:
        adapter = runtime.adapter()
        for report in held:
            if report.client_id not in (None, adapter.client_id):
                logger.warning("bracket leg %s is held by IB client %s: not ours to cancel", leg.pk, report.client_id)
                return 0
            adapter.order_cancel(broker_order_id=report.broker_order_id)
    except GatewayError as exc:
        logger.warning("bracket leg %s: cancel not sent (%s); the next reconciliation retries", leg.pk, exc)
        return 0
    with transaction.atomic(durable=True):
        latest = order_latest_event(leg)
        if latest is not None and latest.status == S.CANCEL_PENDING and latest.code == BRACKET_INCOMPLETE:
            return 1
        order_event_append(
            leg,
            status=S.CANCEL_PENDING,
            source=Source.WORKER,
            code=BRACKET_INCOMPLETE,
            reason=HELD_CANCELLED,
            audit_event=events.ORDER_CANCEL_REQUESTED,
            strict=False,
        )
    return 1
