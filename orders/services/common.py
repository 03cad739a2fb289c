"""Helpers shared by the order services: the one way to append an order event, block records, and
the translation between our order rows and broker requests."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction

from audit import events
from audit.readable import UNREADABLE_ERRORS, unreadable_error
from audit.services import audit_record, ledger_write_lock
from brokers.adapter import (
    BrokerOrderRequest,
    ContractInfo,
    ContractSpec,
    OrderPreview,
)
from ibkrgw import metrics
from ibkrgw.actors import Actor
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from ibkrgw.web.render import decimal_str
from marketdata.services import contract_resolve_one
from orders import publish
from orders.models import Order, OrderEvent
from orders.selectors import order_latest_event
from orders.state import can_transition
from orders.types import IB_ACTION, IB_ORDER_TYPE, ORDER_TERMS, OrderRequest

logger = logging.getLogger(__name__)
T = TypeVar("T")


def unreadable_order_named(service: Callable[..., T]) -> Callable[..., T]:
    """For a service acting on one order (`order_id=`): a failure that one of the order's ledger rows explains
    (a value changed behind the application's back that the service cannot work with: an event's data of
    another shape) answers 409 ledger_unreadable naming the row, as reading the order would. Any other failure
    is raised as it was. (Values that would reach the broker are refused before any send: `order_to_act_on`.)"""

    @functools.wraps(service)
    def acting(*args: Any, order_id: Any, **kwargs: Any) -> T:
        try:
            return service(*args, order_id=order_id, **kwargs)
        except UNREADABLE_ERRORS as exc:
            raise unreadable_error(Order.objects.filter(pk=order_id), exc) from exc

    return acting


@dataclass(frozen=True)
class SubmitResult:
    order: Order
    replayed: bool


# -- helpers ---------------------------------------------------------------------------------
def late_send_window() -> timedelta:
    """How long after an order's send timed out it may still reach the broker (the worker's own timeout on
    the call, then the broker's on the message); later, the broker's silence about it means something."""
    return timedelta(seconds=2 * settings.IB_REQUEST_TIMEOUT)


def request_hash(request: OrderRequest) -> str:
    return hashlib.sha256(json.dumps(request.canonical(), sort_keys=True).encode()).hexdigest()


def decimal_json(value):
    return str(value) if isinstance(value, Decimal) else value


def terms_json(terms: dict) -> dict:
    """Order terms as an event's data keeps them: decimals as the API shows them ("10", never "10.00000000")."""
    return {k: decimal_str(v) if isinstance(v, Decimal) else v for k, v in terms.items()}


def preview_json(preview: OrderPreview | None) -> dict | None:
    return None if preview is None else {k: decimal_json(v) for k, v in asdict(preview).items()}


def contract_spec_for(request: OrderRequest) -> ContractSpec:
    return ContractSpec(
        symbol=request.symbol,
        sec_type=request.sec_type,
        exchange=request.exchange,
        currency=request.currency,
        primary_exchange=request.primary_exchange,
        expiry=request.expiry,
        strike=request.strike,
        right=request.right,
        multiplier=request.multiplier,
        con_id=request.con_id,
    )


def broker_request_for_order(
    order: Order,
    contract: ContractInfo,
    *,
    broker_order_id: int | None = None,
    quantity: Decimal | None = None,
    limit_price=None,
    stop_price=None,
    parent_broker_order_id: int | None = None,
    transmit: bool = True,
) -> BrokerOrderRequest:
    return BrokerOrderRequest(
        contract=contract,
        account=order.account,
        action=IB_ACTION[order.action],
        quantity=quantity if quantity is not None else order.quantity,
        order_type=IB_ORDER_TYPE.get(order.order_type, order.order_type),
        tif=order.tif,
        order_ref=order.client_order_id,
        limit_price=limit_price if limit_price is not None else order.limit_price,
        stop_price=stop_price if stop_price is not None else order.stop_price,
        trail_amount=order.trail_amount,
        trail_percent=order.trail_percent,
        outside_rth=order.outside_rth,
        oca_group=order.oca_group,
        broker_order_id=broker_order_id,
        parent_broker_order_id=parent_broker_order_id,
        transmit=transmit,
    )


def broker_request_for(request: OrderRequest, contract: ContractInfo, account: str) -> BrokerOrderRequest:
    return BrokerOrderRequest(
        contract=contract,
        account=account,
        action=IB_ACTION[request.action],
        quantity=request.quantity,
        order_type=IB_ORDER_TYPE.get(request.order_type, request.order_type),
        tif=request.tif,
        order_ref=request.client_order_id or "preview",
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        trail_amount=request.trail_amount,
        trail_percent=request.trail_percent,
        outside_rth=request.outside_rth,
    )


def order_contract_with_rules(order: Order) -> ContractInfo:
    """The order's contract with the trading rules the broker reports (tick, size steps), from the contract
    cache or the broker; the contract as recorded on the order (no rules known) when neither can say. For a
    recorded order checked again before a send (modify, approval), as a new one is."""
    try:
        # On the order's behalf: should it need the broker, it goes ahead of queued market-data reads.
        return contract_resolve_one(spec=contract_spec_for(order_request_of(order)), for_order=True)
    except (GatewayError, BrokerUnavailable):
        return order_contract(order)


def order_contract(order: Order) -> ContractInfo:
    return ContractInfo(
        con_id=order.con_id,
        symbol=order.symbol,
        sec_type=order.sec_type,
        exchange=order.exchange,
        currency=order.currency,
        primary_exchange=order.primary_exchange,
        expiry=order.expiry,
        strike=order.strike,
        right=order.right,
        multiplier=order.multiplier,
        local_symbol=order.local_symbol,
    )


def gate_block_record(exc: GatewayError, *, request: OrderRequest, actor: Actor, account: str) -> None:
    """A blocked order leaves one audit entry (with the full request) and nothing else."""
    exc.audited = True  # the door does not record it a second time
    metrics.GATE_BLOCKS.labels(code=str(exc.code)).inc()
    with transaction.atomic():
        audit_record(
            event=events.GATE_BLOCKED,
            actor=actor,
            target_type="order_request",
            target_id=request.client_order_id or "",
            data={
                "code": str(exc.code),
                "gate": exc.details.get("gate", ""),
                "message": exc.message,
                "account": account,
                "request": request.canonical(),
                "details": exc.details,
            },
        )


def order_event_append(
    order: Order,
    *,
    status: str,
    actor: Actor | None = None,
    source: str = "",
    reason: str = "",
    code: str = "",
    data: dict | None = None,
    broker_order_id: int | None = None,
    perm_id: int | None = None,
    filled: Decimal | None = None,
    remaining: Decimal | None = None,
    average_fill_price: Decimal | None = None,
    audit_event: str = events.ORDER_STATUS_CHANGED,
    strict: bool = True,
    latest: OrderEvent | None = None,
    restate: bool = False,
) -> OrderEvent | None:
    """Append a state transition checked against the state machine. Call inside a transaction.

    Returns None (and appends nothing) when the transition is not allowed and `strict` is False.
    `latest`: the order's latest event, when the caller has just read it in this transaction.
    `restate`: the event repeats the order's status, in any state, to add what the broker said about it.
    """
    # Under the writers' lock, so the transition is checked against the true latest event (on
    # PostgreSQL a concurrent writer could otherwise commit one between this read and the insert).
    ledger_write_lock()
    latest = latest or order_latest_event(order)
    current = latest.status if latest else None
    if current is not None and not can_transition(current, status) and not (restate and status == current):
        if strict:
            raise GatewayError(
                ErrorCode.ORDER_STATE_CONFLICT,
                f"An order in state {current} cannot become {status}.",
                http_status=409,
                details={"status": current, "requested": status},
            )
        return None
    event = OrderEvent.objects.create(
        order=order,
        status=status,
        reason=reason[:2000],
        code=code,
        data=data or {},
        source=source,
        broker_order_id=broker_order_id
        if broker_order_id is not None
        else (latest.broker_order_id if latest else None),
        perm_id=perm_id if perm_id is not None else (latest.perm_id if latest else None),
        filled_quantity=filled if filled is not None else (latest.filled_quantity if latest else Decimal(0)),
        remaining_quantity=remaining if remaining is not None else (latest.remaining_quantity if latest else None),
        average_fill_price=(
            average_fill_price if average_fill_price is not None else (latest.average_fill_price if latest else None)
        ),
    )
    entry = audit_record(
        event=audit_event,
        actor=actor or Actor.system(),
        target_type="order",
        target_id=str(order.pk),
        data={
            "status": status,
            "previous": current,
            "reason": reason,
            "code": code,
            "broker_order_id": event.broker_order_id,
            "filled": decimal_str(event.filled_quantity),
        },
    )
    transaction.on_commit(lambda: publish.order_event(order_id=order.pk, event_id=event.pk, seq=entry.seq))
    transaction.on_commit(lambda: metrics.ORDER_EVENTS.labels(status=status).inc())
    return event


def order_request_of(order: Order, **overrides) -> OrderRequest:
    """The request an order row was made from (intent fields), with `overrides` (e.g. modified terms)."""
    fields = {
        "symbol": order.symbol,
        "sec_type": order.sec_type,
        "con_id": order.con_id,
        **{name: getattr(order, name) for name in ORDER_TERMS},
        "account": order.account,
        "client_order_id": order.client_order_id,
    }
    return OrderRequest(**{**fields, **overrides})


def order_terms(order: Order) -> dict[str, Decimal | None]:
    """Quantity and prices in force: the intent, overridden by the latest modification."""
    return order_terms_changed(order)[0]


def order_terms_changed(order: Order) -> tuple[dict[str, Decimal | None], datetime | None]:
    """The terms in force, and when they were last changed (None: never, they are the intent's)."""
    for event in order.events.all().order_by("-id"):
        modified = (event.data or {}).get("modified")
        if modified:
            return {k: (Decimal(v) if v is not None else None) for k, v in modified.items()}, event.at
    return {"quantity": order.quantity, "limit_price": order.limit_price, "stop_price": order.stop_price}, None
