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
from orders.models import Order, OrderEvent
from orders.models import OrderStatus as S
from orders.selectors import order_get_or_error, order_latest_event
from orders.services.common import (
    gate_block_record,
    gates_for_existing_order,
    order_contract,
    order_event_append,
    order_request_of,
)
from orders.services.trading import _send

logger = logging.getLogger(__name__)


# -- human approval ----------------------------------------------------------------------------
def _pending_approval(order_id) -> tuple[Order, OrderEvent]:
    order = order_get_or_error(order_id=order_id)
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


def order_approve(*, order_id, actor: Actor) -> Order:
    """An operator lets a held order go: the pre-trade checks run again (prices and switches may have
    changed since it was held), then it is sent like any other order."""
    _operator_only(actor)
    order, latest = _pending_approval(order_id)
    if _approval_expired(latest):
        orders_expire_pending()
        raise GatewayError(
            ErrorCode.ORDER_STATE_CONFLICT,
            "The approval window has passed; the order expired.",
            http_status=409,
            details={"status": S.EXPIRED},
        )
    contract = order_contract(order)
    request = order_request_of(order)
    try:
        gates_for_existing_order(request, contract, order.account)
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
    _send(order, contract, actor)
    return order


def order_reject_approval(*, order_id, actor: Actor, reason: str = "") -> Order:
    """An operator refuses a held order; it is never sent."""
    _operator_only(actor)
    with transaction.atomic(durable=True):
        order, _ = _pending_approval(order_id)
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


def order_withdraw(*, order_id, actor: Actor, reason: str = "") -> Order:
    """Whoever placed a held order takes it back before an operator decides; it is never sent.

    Unlike approving or rejecting, this needs no operator: it only takes risk off."""
    with transaction.atomic(durable=True):
        order, _ = _pending_approval(order_id)
        order_event_append(
            order,
            status=S.CANCELLED,
            actor=actor,
            source=actor.source,
            code="withdrawn",
            reason=reason or f"withdrawn by {actor.label} before approval",
            audit_event=events.ORDER_WITHDRAWN,
        )
    return order


def orders_expire_pending() -> int:
    """Expire held orders nobody approved within APPROVAL_TTL_S. Safe to call any time, from any process."""
    from orders.selectors import order_queryset

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
