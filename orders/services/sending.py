"""Sending recorded intents to the broker. Runs only on the order pipeline's thread.

An intent is committed before its send. What happens after the send is recorded as it happened:
not connected (the broker cannot have it) -> `rejected`; refused by the kill switch's latch, or halted
since it was admitted -> `rejected` with `trading_halted`; any other failure -> `unknown` for
reconciliation, never re-sent. The kill switch is read again right before each send: a halt another
process recorded after this one admitted the order has not closed this process's latch (its sweep does,
within a second), and the halt's global cancel may already have gone out.
The acknowledgement (`submitted` with the broker's order id) is written by the recorder, together
with the statuses arriving at the same moment; the caller waits for it outside the pipeline. It is
queued from the broker connection's own thread as the order is handed over, so the ledger records
the order sent before any status or fill the broker reports for it.
A bracket's legs go out on one connection; when one cannot be sent, the bracket is withdrawn, never
completed later (`orders.services.brackets`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace

from django.db import transaction

from audit import events
from brokers import runtime
from brokers.adapter import BrokerAdapter, ContractInfo, OrderAck
from ibkrgw.actors import Actor
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from orders.models import Order
from orders.models import OrderStatus as S
from orders.pipeline import pipeline
from orders.selectors import trading_halted_before_send
from orders.services.brackets import (
    ENTRY_NOT_PLACED,
    bracket_entry_sent,
    bracket_send_stopped,
    legs_in_send_order,
    legs_not_sent,
)
from orders.services.common import broker_request_for_order, order_event_append
from orders.services.recording import order_sent_record
from orders.types import OrderSent

logger = logging.getLogger(__name__)


def order_send(
    order: Order,
    contract: ContractInfo,
    actor: Actor,
    *,
    parent_broker_order_id: int | None = None,
    transmit: bool = True,
    connection: str = "",
) -> OrderSent | None:
    """Place one recorded intent at the broker. The acknowledgement, or None when the outcome is unknown.

    `connection`: only on that broker connection (a bracket's later legs follow their entry's).
    Raises BrokerUnavailable (not connected) and the kill switch's 423 (its latch, or a halt recorded since
    the order was admitted) after recording `rejected`."""
    adapter = runtime.adapter()
    rt = runtime.current()
    queued: list[OrderSent] = []

    def queue_for_ledger(ack: OrderAck) -> None:
        if rt is not None:
            sent = _order_sent(order, ack, actor, adapter)
            rt.recorder.put(sent)
            queued.append(sent)  # only once it is on the recorder's queue: else it is queued below

    try:
        _require_not_halted_since_admitted()
        request = broker_request_for_order(
            order, contract, parent_broker_order_id=parent_broker_order_id, transmit=transmit
        )
        ack = adapter.order_place(request=replace(request, connection=connection), on_ack=queue_for_ledger)
    except (BrokerUnavailable, GatewayError) as exc:
        never_sent = isinstance(exc, BrokerUnavailable) and exc.code == ErrorCode.BROKER_UNAVAILABLE
        halted = exc.code == ErrorCode.TRADING_HALTED
        if not (never_sent or halted):
            _record_unknown(order, actor, exc)
            return None
        with transaction.atomic(durable=True):
            order_event_append(
                order,
                status=S.REJECTED,
                actor=actor,
                source=actor.source,
                reason=exc.message,
                code=str(exc.code),
                audit_event=events.ORDER_REJECTED,
                strict=False,
            )
        raise
    except Exception as exc:
        _record_unknown(order, actor, exc)
        return None
    pipeline().sent_ids[order.pk] = (ack.broker_order_id, ack.client_id)
    if queued:
        return queued[0]
    sent = _order_sent(order, ack, actor, adapter)
    if rt is None:
        order_sent_record(sent=sent)
    else:
        rt.recorder.put(sent)  # the adapter did not call back (it failed): queued late rather than never
    return sent


def _require_not_halted_since_admitted() -> None:
    # Admission read the kill switch in its transaction; a halt committed since then by another process
    # (whose global cancel this order would miss) stops the send here, as this process's latch would.
    if trading_halted_before_send():
        raise GatewayError(
            ErrorCode.TRADING_HALTED,
            "Trading was halted after this order was admitted: it was not sent.",
            http_status=423,
            details={"gate": "kill_switch"},
        )


def _order_sent(order: Order, ack: OrderAck, actor: Actor, adapter: BrokerAdapter) -> OrderSent:
    return OrderSent(
        order_id=order.pk,
        broker_order_id=ack.broker_order_id,
        perm_id=ack.perm_id,
        client_id=ack.client_id,
        actor=actor,
        order=order,
        perm_id_now=functools.partial(adapter.order_perm_id, broker_order_id=ack.broker_order_id),
        connection=ack.connection,
    )


def _record_unknown(order: Order, actor: Actor, exc: Exception) -> None:
    # Outcome unknown (timeout, owner died mid-call): reconciliation will find out; never re-sent.
    logger.warning("sending order %s: outcome unknown (%s)", order.pk, exc)
    with transaction.atomic(durable=True):
        order_event_append(
            order,
            status=S.UNKNOWN,
            actor=actor,
            source=actor.source,
            reason=str(exc),
            audit_event=events.ORDER_UNKNOWN,
            strict=False,
        )


def order_send_with_exits(
    order: Order, contract: ContractInfo, actor: Actor, *, children: list[Order] | None = None
) -> list[OrderSent]:
    """Send an order; a bracket as IB expects: the entry and its exits, only the last one transmitting.

    All on the connection the entry went out on. When a leg cannot be sent, the bracket stops there: the
    legs after it are never sent, and the ones sent are withdrawn (`orders.services.brackets`).
    `children`: the bracket's exits when the caller has just recorded them (else they are read)."""
    children = legs_in_send_order(children if children is not None else order.children.all())
    if not children:
        sent = order_send(order, contract, actor)
        return [sent] if sent else []
    try:
        entry = order_send(order, contract, actor, transmit=False)
    except GatewayError:
        legs_not_sent(children, actor, reason=ENTRY_NOT_PLACED)
        raise
    if entry is None:  # the broker may hold it untransmitted: reconciliation settles it with its exits
        bracket_send_stopped(sent=[], unsent=children, actor=actor)
        return []
    bracket_entry_sent(entry)
    acks = [entry]
    for i, child in enumerate(children):
        try:
            sent = order_send(
                child,
                contract,
                actor,
                parent_broker_order_id=entry.broker_order_id,
                transmit=i == len(children) - 1,
                connection=entry.connection,
            )
        except GatewayError:
            bracket_send_stopped(sent=acks, unsent=children[i + 1 :], actor=actor)
            raise
        if sent is None:
            bracket_send_stopped(sent=acks, unsent=children[i + 1 :], actor=actor)
            return acks
        acks.append(sent)
    return acks
