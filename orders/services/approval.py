"""Human approval: orders from chosen actors wait in `pending_approval` until an operator decides."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import events
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import ErrorCode, GatewayError
from orders import gates
from orders.models import Order, OrderEvent
from orders.models import OrderStatus as S
from orders.pipeline import pipeline
from orders.selectors import order_latest_event, order_queryset, order_to_act_on, orders_since, trading_halted
from orders.services import checks
from orders.services.common import (
    gate_block_record,
    order_contract_with_rules,
    order_event_append,
    order_request_of,
    unreadable_order_named,
)
from orders.services.sending import order_send_with_exits

logger = logging.getLogger(__name__)


# -- human approval ----------------------------------------------------------------------------
def _pending_approval(order_id, *, sending: bool = True) -> tuple[Order, OrderEvent]:
    order = order_to_act_on(order_id=order_id, sending=sending)
    latest = order_latest_event(order)
    if latest.status != S.PENDING_APPROVAL:
        raise GatewayError(
            ErrorCode.ORDER_STATE_CONFLICT,
            f"The order is {latest.status}, not waiting for approval.",
            http_status=409,
            details={"status": latest.status},
        )
    return order, latest


def _approval_expired(latest: OrderEvent) -> bool:
    return timezone.now() - latest.at > timedelta(seconds=settings.APPROVAL_TTL_S)


def _operator_only(actor: Actor) -> None:
    if actor.kind != ActorKind.USER or actor.source == Source.MCP:
        raise GatewayError(
            ErrorCode.PERMISSION_DENIED, "Only an operator can approve or reject orders.", http_status=403
        )


def approval_needs_another_person(order: Order, actor: Actor) -> bool:
    """Whether `actor` placed `order` themselves as a console user, so that (four eyes, on unless
    APPROVAL_SECOND_PERSON is off) someone else must approve it. Users are told apart by user name,
    as the order recorded its placer."""
    return (
        settings.APPROVAL_SECOND_PERSON
        and order.actor_kind == ActorKind.USER
        and actor.kind == ActorKind.USER
        and order.actor_label == actor.label
    )


@unreadable_order_named
def order_approve(*, order_id, actor: Actor) -> Order:
    """An operator lets a held order go: the pre-trade checks run again (prices and switches may have
    changed since it was held), then it is sent like any other order, through the pipeline."""
    _operator_only(actor)
    order, latest = _pending_approval(order_id)
    request = order_request_of(order)
    if approval_needs_another_person(order, actor):
        refused = gates.GateBlocked(
            "approval",
            ErrorCode.SELF_APPROVAL,
            "You placed this order; another user must approve it (four eyes: APPROVAL_SECOND_PERSON).",
            http_status=403,
            details={"placed_by": order.actor_label},
        )
        gate_block_record(refused, request=request, actor=actor, account=order.account)
        raise refused
    _refuse_expired(latest)
    contract = order_contract_with_rules(order)
    trip = checks.Checks(request=request, account=order.account, contract=contract)
    try:
        trip.run(checks.APPROVAL_STEPS)
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=order.account)
        raise

    def approve() -> list:
        _, fresh = _pending_approval(order_id)
        _refuse_expired(fresh)
        try:
            checks.existing_order_gates(halted=trading_halted())
            # Sent now, so it counts now: an order held longer than the window counts again from its approval
            # (orders_since counts it so from then on); one recorded within the window is counted already.
            since = timezone.now() - timedelta(seconds=60)
            adding = 1 if order.created_at < since else 0
            gates.gate_orders_per_minute(orders_since(account=order.account, since=since), adding=adding)
        except GatewayError as exc:
            gate_block_record(exc, request=request, actor=actor, account=order.account)
            raise
        with transaction.atomic(durable=True):
            order_event_append(
                order,
                status=S.PENDING_SUBMIT,
                actor=actor,
                source=actor.source,
                reason=f"approved by {actor.label}",
                audit_event=events.ORDER_APPROVED,
            )
        return order_send_with_exits(order, contract, actor)

    for sent in pipeline().run(approve):
        sent.written.wait(2.0)
    return order


def _refuse_expired(latest: OrderEvent) -> None:
    """Approval must happen within APPROVAL_TTL_S of the hold, checked at approve time."""
    if _approval_expired(latest):
        orders_expire_pending()
        raise GatewayError(
            ErrorCode.ORDER_STATE_CONFLICT,
            "The approval window has passed; the order expired.",
            http_status=409,
            details={"status": S.EXPIRED},
        )


def order_reject_approval(*, order_id, actor: Actor, reason: str = "") -> Order:
    """An operator refuses a held order; it is never sent."""
    _operator_only(actor)
    with transaction.atomic(durable=True):
        # Rejecting sends nothing: a held order whose rows are not as sealed can still be turned down.
        order, _ = _pending_approval(order_id, sending=False)
        order_event_append(
            order,
            status=S.REJECTED,
            actor=actor,
            source=actor.source,
            code="approval_rejected",
            reason=reason or f"rejected by {actor.label}",
            audit_event=events.ORDER_APPROVAL_REJECTED,
        )
    return order


def orders_expire_pending() -> int:
    """Expire held orders nobody approved within APPROVAL_TTL_S. Safe to call any time, from any process."""
    expired = 0
    for order in order_queryset().filter(current_status=S.PENDING_APPROVAL):
        with transaction.atomic(durable=True):
            latest = order_latest_event(order)
            if latest.status != S.PENDING_APPROVAL or not _approval_expired(latest):
                continue
            order_event_append(
                order,
                status=S.EXPIRED,
                source=Source.WORKER,
                audit_event=events.ORDER_EXPIRED,
                reason=f"not approved within {settings.APPROVAL_TTL_S}s",
            )
            expired += 1
    return expired
