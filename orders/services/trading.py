"""Placing, previewing, cancelling and modifying orders: the gates, intent first, then the send."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import events
from audit.services import audit_record
from brokers import runtime
from brokers.adapter import (
    ContractInfo,
    OrderPreview,
)
from brokers.selectors import account_default
from ibkrgw import metrics
from ibkrgw.actors import Actor
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from marketdata.services import contract_resolve_one
from orders import gates, publish
from orders.gates import GateBlocked
from orders.models import Order, OrderEvent
from orders.models import OrderStatus as S
from orders.selectors import order_broker_id, order_get_or_error, order_latest_event, trading_halted
from orders.services.common import (
    SubmitResult,
    broker_request_for,
    broker_request_for_order,
    contract_spec_for,
    decimal_json,
    gate_block_record,
    gates_for_existing_order,
    order_contract,
    order_event_append,
    order_request_of,
    preview_json,
    request_hash,
)
from orders.state import TERMINAL
from orders.types import OrderRequest, OrderSent

logger = logging.getLogger(__name__)
GENERATED_ID_PREFIX = "gw-"
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SENT_RECORD_WAIT_S = 2.0
INTENT_REASONS = {
    S.SIMULATED: "ORDERS_ENABLED=false: recorded, not sent",
    S.PENDING_APPROVAL: "Waiting for an operator to approve it in the admin.",
}


# -- preview ---------------------------------------------------------------------------------
def order_preview(*, request: OrderRequest, actor: Actor) -> tuple[ContractInfo, str, OrderPreview]:
    """What-if: commission, margin and equity impact. Nothing is recorded or sent."""
    gates.gate_order_shape(request)
    contract = contract_resolve_one(spec=contract_spec_for(request))
    gates.gate_tick_size(request, contract)
    account = request.account or account_default()
    gates.gate_account_managed(account, runtime.adapter().managed_accounts())
    preview = runtime.adapter().order_preview(request=broker_request_for(request, contract, account))
    return contract, account, preview


# -- submit ----------------------------------------------------------------------------------
def order_submit(*, request: OrderRequest, actor: Actor, idempotency_key: str | None = None) -> SubmitResult:
    """Run the gates, record the intent, then (if armed) send it. Safe to call twice with one key.

    Returns the order (`replayed=True` when the key was seen before with the same body).
    Raises GateBlocked (4xx, audited) when a gate blocks, 422 idempotency_key_reused when the key
    was used for a different order, 503 broker_unavailable when the broker is not ready.
    """
    key = request.client_order_id or idempotency_key or ""
    if request.client_order_id and idempotency_key and request.client_order_id != idempotency_key:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "client_order_id and Idempotency-Key differ.",
            details={"fields": ["client_order_id"]},
        )
    if key and not CLIENT_ORDER_ID.fullmatch(key):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "client_order_id / Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            details={"fields": ["client_order_id"]},
        )
    supplied_key = bool(key)
    request = replace(request, client_order_id=key or f"{GENERATED_ID_PREFIX}{uuid.uuid4().hex[:24]}")
    account = request.account or account_default()
    # The account is part of what is compared: naming the default account or leaving it out is one order.
    request = replace(request, account=account)
    digest = request_hash(request)

    # 6. idempotency first: a replay never runs the gates again.
    replay = _replay(account, request.client_order_id, digest)
    if replay is not None:
        return replay

    try:
        if request.is_bracket and gates.orders_armed() and actor.kind in settings.APPROVAL_REQUIRED_FOR:
            raise GateBlocked(
                "validation",
                ErrorCode.INVALID_ORDER,
                "Brackets cannot wait for approval yet: place the entry alone, or ask an operator.",
                details={"field": "take_profit"},
            )
        contract, preview = _run_gates(request, account, digest, supplied_key)
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=account)
        raise

    armed = gates.orders_armed()
    first_status = S.SIMULATED
    if armed:
        first_status = S.PENDING_APPROVAL if actor.kind in settings.APPROVAL_REQUIRED_FOR else S.PENDING_SUBMIT
    try:
        order = _record_intent(request, contract, account, digest, preview, actor, first_status)
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with its order.
        replay = _replay(account, request.client_order_id, digest)
        if replay is None:
            raise
        return replay
    if first_status == S.PENDING_SUBMIT:
        _send_with_children(order, contract, actor)
    return SubmitResult(order=order, replayed=False)


def _send_with_children(order: Order, contract: ContractInfo, actor: Actor) -> None:
    """Send an order; for a bracket, the entry and its exits as IB expects: only the last one transmits."""
    children = list(order.children.order_by("role"))
    if not children:
        _send(order, contract, actor)
        return
    try:
        parent_id = _send(order, contract, actor, transmit=False)
    except BrokerUnavailable:
        _exits_not_sent(children, actor)
        raise
    if parent_id is None:
        _exits_not_sent(children, actor)
        return
    for i, child in enumerate(children):
        _send(child, contract, actor, parent_broker_order_id=parent_id, transmit=i == len(children) - 1)


def _replay(account: str, client_order_id: str, digest: str) -> SubmitResult | None:
    existing = Order.objects.filter(account=account, client_order_id=client_order_id).first()
    if existing is None:
        return None
    if existing.request_hash != digest:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            f"client_order_id {client_order_id!r} was already used for a different order.",
            http_status=422,
            details={"order_id": str(existing.pk)},
        )
    return SubmitResult(order=existing, replayed=True)


def _run_gates(
    request: OrderRequest, account: str, digest: str, supplied_key: bool
) -> tuple[ContractInfo, OrderPreview | None]:
    adapter = runtime.adapter()
    # 2. validation
    gates.gate_order_shape(request)
    contract = contract_resolve_one(spec=contract_spec_for(request))
    gates.gate_tick_size(request, contract)
    gates.gate_trading_hours(request, contract, timezone.now())
    gates.gate_account_managed(account, adapter.managed_accounts())
    # 3. account mode
    gates.gate_account_mode(account)
    # 4. risk
    gates.gate_kill_switch(trading_halted())
    quote = adapter.quote_cached(con_id=contract.con_id)
    if not gates.quote_is_fresh(quote):
        quote = adapter.quote_snapshot(contract=contract)
    since = timezone.now() - timedelta(seconds=60)
    ctx = gates.RiskContext(
        quote=quote,
        orders_last_minute=Order.objects.filter(account=account, created_at__gte=since).count(),
        duplicate_recent=not supplied_key
        and settings.RISK_DUPLICATE_WINDOW_S > 0
        and Order.objects.filter(
            account=account,
            request_hash=digest,
            created_at__gte=timezone.now() - timedelta(seconds=settings.RISK_DUPLICATE_WINDOW_S),
        ).exists(),
        halted=False,
    )
    gates.gate_risk(request, contract, ctx)
    gates.gate_bracket_shape(request, gates.reference_price(request, quote))
    preview = adapter.order_preview(request=broker_request_for(request, contract, account))
    gates.gate_buying_power(preview)
    # 5. arming
    if gates.orders_armed():
        gates.gate_live_override()
        if not runtime.orders_allowed():
            raise BrokerUnavailable(
                "The broker is not connected and reconciled yet; no order was sent.", details={"gate": "arming"}
            )
    return contract, preview


def _record_intent(
    request: OrderRequest,
    contract: ContractInfo,
    account: str,
    digest: str,
    preview: OrderPreview | None,
    actor: Actor,
    status: str,
) -> Order:
    """Intent first: the order rows, their first events and audit entries commit before any send.

    A bracket is one request and one transaction: the entry plus its take-profit and stop-loss
    children, linked by `parent` and one OCA group.
    """
    with transaction.atomic(durable=True):
        children = bracket_children(request)
        # The exits cancel each other (one OCA group); the entry is linked to them as their parent.
        oca_group = f"{request.client_order_id}.oca" if children else ""
        order = _intent_row(
            request, contract, account, digest, preview, actor, status, role="entry" if children else ""
        )
        for role, child in children:
            _intent_row(
                child,
                contract,
                account,
                request_hash(child),
                None,
                actor,
                status,
                parent=order,
                role=role,
                oca_group=oca_group,
            )
    return order


def bracket_children(request: OrderRequest) -> list[tuple[str, OrderRequest]]:
    """The exits of a bracket entry: opposite side, same quantity, good till cancelled."""
    if not request.is_bracket:
        return []
    exit_side = {
        "action": "SELL" if request.action in ("BUY", "BUY_TO_COVER") else "BUY",
        "tif": "GTC",
        "take_profit": None,
        "stop_loss": None,
        "limit_price": None,
        "stop_price": None,
    }
    children = []
    if request.take_profit is not None:
        take_profit = {**exit_side, "order_type": "LMT", "limit_price": request.take_profit}
        children.append(
            ("take_profit", replace(request, **take_profit, client_order_id=f"{request.client_order_id}.tp"))
        )
    if request.stop_loss is not None:
        stop_loss = {**exit_side, "order_type": "STP", "stop_price": request.stop_loss}
        children.append(("stop_loss", replace(request, **stop_loss, client_order_id=f"{request.client_order_id}.sl")))
    return children


def _intent_row(
    request: OrderRequest,
    contract: ContractInfo,
    account: str,
    digest: str,
    preview: OrderPreview | None,
    actor: Actor,
    status: str,
    *,
    parent: Order | None = None,
    role: str = "",
    oca_group: str = "",
) -> Order:
    """One intent row with its first event and audit entry (inside the caller's transaction)."""
    order = Order.objects.create(
        account=account,
        client_order_id=request.client_order_id,
        request_hash=digest,
        symbol=contract.symbol,
        sec_type=contract.sec_type,
        exchange=contract.exchange,
        primary_exchange=contract.primary_exchange,
        currency=contract.currency,
        con_id=contract.con_id,
        expiry=contract.expiry,
        strike=contract.strike,
        right=contract.right,
        multiplier=contract.multiplier,
        local_symbol=contract.local_symbol,
        action=request.action,
        quantity=request.quantity,
        order_type=request.order_type,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        trail_amount=request.trail_amount,
        trail_percent=request.trail_percent,
        tif=request.tif,
        outside_rth=request.outside_rth,
        trading_mode=settings.TRADING_MODE,
        preview=preview_json(preview),
        actor_kind=actor.kind,
        actor_label=actor.label[:150],
        source=actor.source,
        correlation_id=actor.correlation_id,
        parent=parent,
        role=role,
        oca_group=oca_group,
    )
    event = OrderEvent.objects.create(
        order=order,
        status=status,
        source=actor.source,
        remaining_quantity=request.quantity,
        reason=INTENT_REASONS.get(status, ""),
    )
    entry = audit_record(
        event=events.ORDER_SIMULATED if status == S.SIMULATED else events.ORDER_SUBMITTED,
        actor=actor,
        target_type="order",
        target_id=str(order.pk),
        data={
            "client_order_id": order.client_order_id,
            "account": account,
            "status": status,
            "request": request.canonical(),
            "con_id": contract.con_id,
        },
    )
    transaction.on_commit(lambda: publish.order_event(order_id=order.pk, event_id=event.pk, seq=entry.seq))
    transaction.on_commit(lambda: metrics.ORDER_EVENTS.labels(status=status).inc())
    return order


def _exits_not_sent(children: list[Order], actor: Actor) -> None:
    """The entry never reached the broker for sure, so its exits are not sent at all."""
    with transaction.atomic(durable=True):
        for child in children:
            order_event_append(
                child,
                status=S.REJECTED,
                actor=actor,
                source=actor.source,
                reason="The bracket's entry was not placed, so this exit was not sent.",
                audit_event=events.ORDER_REJECTED,
                strict=False,
            )


def _send(
    order: Order,
    contract: ContractInfo,
    actor: Actor,
    *,
    parent_broker_order_id: int | None = None,
    transmit: bool = True,
) -> int | None:
    """Place one recorded intent at the broker; the broker's order id, or None when it was not placed."""
    try:
        ack = runtime.adapter().order_place(
            request=broker_request_for_order(
                order, contract, parent_broker_order_id=parent_broker_order_id, transmit=transmit
            )
        )
    except BrokerUnavailable as exc:
        # Not connected: placeOrder never ran, so the broker cannot have it.
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
        # Outcome unknown: reconciliation will find out; never re-sent automatically.
        logger.exception("sending order %s failed", order.pk)
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
        return None
    sent = OrderSent(
        order_id=order.pk,
        broker_order_id=ack.broker_order_id,
        perm_id=ack.perm_id,
        client_id=ack.client_id,
        actor=actor,
    )
    rt = runtime.current()
    if rt is None:
        order_sent_record(sent=sent)
        return ack.broker_order_id
    # Hand the acknowledgement to the recorder, which writes it together with the statuses and fills
    # arriving at the same moment; wait (bounded) so the response shows the broker's order id.
    rt.recorder.put(sent)
    if not sent.written.wait(SENT_RECORD_WAIT_S):
        logger.warning("order %s: acknowledgement not recorded within %ss", order.pk, SENT_RECORD_WAIT_S)
    return ack.broker_order_id


def order_sent_record(*, sent: OrderSent) -> None:
    """Append `submitted` with the broker's order id (unless a broker status already moved the order on)."""
    with transaction.atomic():
        order = Order.objects.get(pk=sent.order_id)
        latest = order_latest_event(order)
        if latest is not None and latest.status == S.PENDING_SUBMIT:
            order_event_append(
                order,
                status=S.SUBMITTED,
                actor=sent.actor,
                source=sent.actor.source,
                broker_order_id=sent.broker_order_id,
                perm_id=sent.perm_id,
                data={"client_id": sent.client_id},
                audit_event=events.ORDER_SENT,
                strict=False,
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


# -- cancel and modify -------------------------------------------------------------------------
def order_cancel(*, order_id, actor: Actor) -> Order:
    """Ask the broker to cancel a working order. Cancelling an order already cancelling is a no-op."""
    with transaction.atomic(durable=True):
        order = order_get_or_error(order_id=order_id)
        latest = order_latest_event(order)
        if latest.status == S.CANCEL_PENDING:
            return order
        if latest.status in TERMINAL or latest.status in (S.PENDING_APPROVAL,):
            raise GatewayError(
                ErrorCode.ORDER_STATE_CONFLICT,
                f"An order in state {latest.status} cannot be cancelled.",
                http_status=409,
                details={"status": latest.status},
            )
        _require_own_connection(order, runtime.adapter())
        broker_id = order_broker_id(order)
        if broker_id is None:
            raise GatewayError(
                ErrorCode.ORDER_STATE_CONFLICT,
                "The broker has not acknowledged this order yet.",
                http_status=409,
                details={"status": latest.status},
            )
        order_event_append(
            order, status=S.CANCEL_PENDING, actor=actor, source=actor.source, audit_event=events.ORDER_CANCEL_REQUESTED
        )
    runtime.adapter().order_cancel(broker_order_id=broker_id)
    return order


def order_modify(
    *,
    order_id,
    actor: Actor,
    quantity: Decimal | None = None,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
) -> Order:
    """Change quantity or prices of a working order; the same gates apply to the new values."""
    order = order_get_or_error(order_id=order_id)
    latest = order_latest_event(order)
    if latest.status not in (S.SUBMITTED, S.PARTIALLY_FILLED, S.INACTIVE):
        raise GatewayError(
            ErrorCode.ORDER_NOT_MODIFIABLE,
            f"An order in state {latest.status} cannot be modified.",
            http_status=409,
            details={"status": latest.status},
        )
    current = order_terms(order)
    new_terms = {
        "quantity": quantity if quantity is not None else current["quantity"],
        "limit_price": limit_price if limit_price is not None else current["limit_price"],
        "stop_price": stop_price if stop_price is not None else current["stop_price"],
    }
    if new_terms == current:
        return order
    request = order_request_of(order, **new_terms)
    contract = order_contract(order)
    adapter = runtime.adapter()
    _require_own_connection(order, adapter)
    try:
        gates.gate_order_shape(request)
        if new_terms["quantity"] < latest.filled_quantity:
            raise gates._invalid("quantity cannot go below the filled quantity.", field="quantity")
        gates.gate_tick_size(request, contract)
        gates_for_existing_order(request, contract, order.account)
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=order.account)
        raise
    broker_id = order_broker_id(order)
    with transaction.atomic(durable=True):
        order_event_append(
            order,
            status=latest.status,
            actor=actor,
            source=actor.source,
            data={"modified": {k: decimal_json(v) for k, v in new_terms.items()}},
            remaining=new_terms["quantity"] - latest.filled_quantity,
            audit_event=events.ORDER_MODIFIED,
        )
    ack = adapter.order_place(request=broker_request_for_order(order, contract, broker_order_id=broker_id, **new_terms))
    if ack.broker_order_id != broker_id:
        logger.warning("modify of %s got a new broker id %s", order.pk, ack.broker_order_id)
    return order


def order_client_id(order: Order) -> int | None:
    """The IB client id the order was placed through, as recorded on its events."""
    for data in OrderEvent.objects.filter(order=order).order_by("-id").values_list("data", flat=True):
        if data and data.get("client_id") is not None:
            return int(data["client_id"])
    return None


def _require_own_connection(order: Order, adapter) -> None:
    """IB lets only the client that placed an order change it: its order ids are per client id."""
    placed_by = order_client_id(order)
    if placed_by is not None and placed_by != adapter.client_id:
        raise GatewayError(
            ErrorCode.ORDER_STATE_CONFLICT,
            f"This order was placed through IB client id {placed_by}; this process is client id "
            f"{adapter.client_id}. Change it from that process, or halt trading to cancel everything.",
            http_status=409,
            details={"client_id": placed_by},
        )


def order_terms(order: Order) -> dict[str, Decimal | None]:
    """Quantity and prices in force: the intent, overridden by the latest modification."""
    terms = {"quantity": order.quantity, "limit_price": order.limit_price, "stop_price": order.stop_price}
    for event in order.events.all().order_by("-id"):
        modified = (event.data or {}).get("modified")
        if modified:
            return {k: (Decimal(v) if v is not None else None) for k, v in modified.items()}
    return terms
