"""Order writes: one service per action, shared by REST, websockets, MCP, the admin and the recorder.

Every write runs in one durable transaction that appends ledger rows, writes its audit entry and
publishes on commit. Rows are only ever appended: an order's state is its latest `OrderEvent`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import events
from audit.services import audit_record
from brokers import runtime
from brokers.adapter import (
    BrokerCommission,
    BrokerExecution,
    BrokerOrderRequest,
    BrokerOrderStatus,
    BrokerSnapshot,
    ContractInfo,
    ContractSpec,
    OrderPreview,
)
from brokers.selectors import account_default
from ibkrgw import metrics
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from marketdata.services import contract_resolve_one
from orders import gates, publish
from orders.models import Commission, Fill, Order, OrderEvent, TradingSwitchEvent
from orders.models import OrderStatus as S
from orders.selectors import order_broker_id, order_latest_event, trading_halted
from orders.state import TERMINAL, can_transition, from_ib
from orders.types import IB_ACTION, IB_ORDER_TYPE, OrderRequest, OrderSent

logger = logging.getLogger(__name__)
PROCESS_STARTED_AT = timezone.now()
GENERATED_ID_PREFIX = "gw-"
SENT_RECORD_WAIT_S = 2.0
INTENT_REASONS = {
    S.SIMULATED: "ORDERS_ENABLED=false: recorded, not sent",
    S.PENDING_APPROVAL: "Waiting for an operator to approve it in the admin.",
}


@dataclass(frozen=True)
class SubmitResult:
    order: Order
    replayed: bool


# -- helpers ---------------------------------------------------------------------------------
def request_hash(request: OrderRequest) -> str:
    return hashlib.sha256(json.dumps(request.canonical(), sort_keys=True).encode()).hexdigest()


def _decimal_json(value):
    return str(value) if isinstance(value, Decimal) else value


def _preview_json(preview: OrderPreview | None) -> dict | None:
    return None if preview is None else {k: _decimal_json(v) for k, v in asdict(preview).items()}


def _spec(request: OrderRequest) -> ContractSpec:
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


def _broker_request(
    order: Order,
    contract: ContractInfo,
    *,
    broker_order_id: int | None = None,
    quantity: Decimal | None = None,
    limit_price=None,
    stop_price=None,
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
    )


def _request_broker(request: OrderRequest, contract: ContractInfo, account: str) -> BrokerOrderRequest:
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


def _contract_of(order: Order) -> ContractInfo:
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


def _record_block(exc: GatewayError, *, request: OrderRequest, actor: Actor, account: str) -> None:
    """A blocked order leaves one audit entry (with the full request) and nothing else."""
    metrics.GATE_BLOCKS.labels(code=str(exc.code)).inc()
    with transaction.atomic(durable=True):
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


def _append_event(
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
) -> OrderEvent | None:
    """Append a state transition checked against the state machine. Call inside a transaction.

    Returns None (and appends nothing) when the transition is not allowed and `strict` is False.
    """
    latest = order_latest_event(order)
    current = latest.status if latest else None
    if current is not None and not can_transition(current, status):
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
            "filled": str(event.filled_quantity),
        },
    )
    transaction.on_commit(lambda: publish.order_event(order_id=order.pk, event_id=event.pk, seq=entry.seq))
    transaction.on_commit(lambda: metrics.ORDER_EVENTS.labels(status=status).inc())
    return event


# -- preview ---------------------------------------------------------------------------------
def order_preview(*, request: OrderRequest, actor: Actor) -> tuple[ContractInfo, str, OrderPreview]:
    """What-if: commission, margin and equity impact. Nothing is recorded or sent."""
    gates.gate_order_shape(request)
    contract = contract_resolve_one(spec=_spec(request))
    gates.gate_tick_size(request, contract)
    account = request.account or account_default()
    gates.gate_account_managed(account, runtime.adapter().managed_accounts())
    preview = runtime.adapter().order_preview(request=_request_broker(request, contract, account))
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
    supplied_key = bool(key)
    request = _with_client_order_id(request, key or f"{GENERATED_ID_PREFIX}{uuid.uuid4().hex[:24]}")
    account = request.account or account_default()
    digest = request_hash(request)

    # 6. idempotency first: a replay never runs the gates again.
    replay = _replay(account, request.client_order_id, digest)
    if replay is not None:
        return replay

    try:
        contract, preview = _run_gates(request, account, digest, supplied_key)
    except GatewayError as exc:
        _record_block(exc, request=request, actor=actor, account=account)
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
        _send(order, contract, actor)
    return SubmitResult(order=order, replayed=False)


def _with_client_order_id(request: OrderRequest, client_order_id: str) -> OrderRequest:
    from dataclasses import replace

    return replace(request, client_order_id=client_order_id)


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
    contract = contract_resolve_one(spec=_spec(request))
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
    preview = adapter.order_preview(request=_request_broker(request, contract, account))
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
    """Intent first: the order row, its first event and the audit entry commit before any send."""
    with transaction.atomic(durable=True):
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
            preview=_preview_json(preview),
            actor_kind=actor.kind,
            actor_label=actor.label[:150],
            source=actor.source,
            correlation_id=actor.correlation_id,
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


def _send(order: Order, contract: ContractInfo, actor: Actor) -> None:
    try:
        ack = runtime.adapter().order_place(request=_broker_request(order, contract))
    except BrokerUnavailable as exc:
        # Not connected: placeOrder never ran, so the broker cannot have it.
        with transaction.atomic(durable=True):
            _append_event(
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
            _append_event(
                order,
                status=S.UNKNOWN,
                actor=actor,
                source=actor.source,
                reason=str(exc),
                audit_event=events.ORDER_UNKNOWN,
                strict=False,
            )
        return
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
        return
    # Hand the acknowledgement to the recorder, which writes it together with the statuses and fills
    # arriving at the same moment; wait (bounded) so the response shows the broker's order id.
    rt.recorder.put(sent)
    if not sent.written.wait(SENT_RECORD_WAIT_S):
        logger.warning("order %s: acknowledgement not recorded within %ss", order.pk, SENT_RECORD_WAIT_S)


def order_sent_record(*, sent: OrderSent) -> None:
    """Append `submitted` with the broker's order id (unless a broker status already moved the order on)."""
    with transaction.atomic():
        order = Order.objects.get(pk=sent.order_id)
        latest = order_latest_event(order)
        if latest is not None and latest.status == S.PENDING_SUBMIT:
            _append_event(
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
        order = _order_or_404(order_id)
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
        _append_event(
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
    order = _order_or_404(order_id)
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
    request = OrderRequest(
        symbol=order.symbol,
        action=order.action,
        order_type=order.order_type,
        sec_type=order.sec_type,
        con_id=order.con_id,
        tif=order.tif,
        trail_amount=order.trail_amount,
        trail_percent=order.trail_percent,
        account=order.account,
        client_order_id=order.client_order_id,
        **new_terms,
    )
    contract = _contract_of(order)
    adapter = runtime.adapter()
    _require_own_connection(order, adapter)
    try:
        gates.gate_order_shape(request)
        if new_terms["quantity"] < latest.filled_quantity:
            raise gates._invalid("quantity cannot go below the filled quantity.", field="quantity")
        gates.gate_tick_size(request, contract)
        gates.gate_account_mode(order.account)
        gates.gate_kill_switch(trading_halted())
        quote = adapter.quote_cached(con_id=contract.con_id) or adapter.quote_snapshot(contract=contract)
        gates.gate_risk(
            request,
            contract,
            gates.RiskContext(quote=quote, orders_last_minute=0, duplicate_recent=False, halted=False),
        )
        gates.gate_live_override()
        if not runtime.orders_allowed():
            raise BrokerUnavailable("The broker is not connected and reconciled yet.", details={"gate": "arming"})
    except GatewayError as exc:
        _record_block(exc, request=request, actor=actor, account=order.account)
        raise
    broker_id = order_broker_id(order)
    with transaction.atomic(durable=True):
        _append_event(
            order,
            status=latest.status,
            actor=actor,
            source=actor.source,
            data={"modified": {k: _decimal_json(v) for k, v in new_terms.items()}},
            remaining=new_terms["quantity"] - latest.filled_quantity,
            audit_event=events.ORDER_MODIFIED,
        )
    ack = adapter.order_place(request=_broker_request(order, contract, broker_order_id=broker_id, **new_terms))
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


def _order_or_404(order_id) -> Order:
    from orders.selectors import order_get_or_error

    return order_get_or_error(order_id=order_id)


# -- broker events (called by the recorder thread) ---------------------------------------------
def _order_for_ref(order_ref: str) -> Order | None:
    if not order_ref:
        return None
    return Order.objects.filter(client_order_id=order_ref).order_by("-created_at").first()


def _status_is_news(latest: OrderEvent | None, status: str, report: BrokerOrderStatus) -> bool:
    return latest is None or not (
        latest.status == status
        and latest.filled_quantity == report.filled
        and latest.broker_order_id == report.broker_order_id
    )


def order_status_apply(*, report: BrokerOrderStatus) -> OrderEvent | None:
    """Append the broker's status if it changes anything. Safe to call twice with one report.

    Runs in a plain transaction so the recorder can group a burst of events into one commit.
    """
    status = from_ib(report.status, filled=report.filled, remaining=report.remaining)
    if status is None:
        return None
    order = _order_for_ref(report.order_ref)
    # Most reports repeat what we know: answer those without taking the write lock.
    if order is None or not _status_is_news(order_latest_event(order), status, report):
        return None
    with transaction.atomic():
        latest = order_latest_event(order)
        if latest is not None and latest.status == S.SIMULATED:
            logger.error("broker reports order %s that was recorded as simulated", order.pk)
            return None
        if not _status_is_news(latest, status, report):
            return None
        reason = report.reason if status in (S.CANCELLED, S.INACTIVE) else ""
        return _append_event(
            order,
            status=status,
            source=Source.WORKER,
            reason=reason,
            code=str(report.error_code or ""),
            broker_order_id=report.broker_order_id,
            perm_id=report.perm_id,
            filled=report.filled,
            remaining=report.remaining,
            average_fill_price=report.average_fill_price,
            data={"client_id": report.client_id} if report.client_id is not None else None,
            strict=False,
        )


def fill_record(*, execution: BrokerExecution) -> Fill | None:
    """Record one execution once (deduplicated by exec_id). Returns None when already recorded."""
    if Fill.objects.filter(exec_id=execution.exec_id).exists():
        return None
    with transaction.atomic():
        if Fill.objects.filter(exec_id=execution.exec_id).exists():
            return None
        order = _order_for_ref(execution.order_ref)
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


def commission_record(*, commission: BrokerCommission) -> Commission | None:
    with transaction.atomic():
        fill = Fill.objects.filter(exec_id=commission.exec_id).first()
        if fill is None or Commission.objects.filter(exec_id=commission.exec_id).exists():
            return None
        row = Commission.objects.create(
            fill=fill,
            exec_id=commission.exec_id,
            commission=commission.commission,
            currency=commission.currency,
            realized_pnl=commission.realized_pnl,
        )
        audit_record(
            event=events.COMMISSION_RECORDED,
            actor=Actor.system(),
            target_type="fill",
            target_id=fill.exec_id,
            data={"commission": str(row.commission), "currency": row.currency},
        )
    return row


def orders_reconcile(*, snapshot: BrokerSnapshot) -> dict[str, int]:
    """Bring the ledger up to date with the broker after a (re)connect.

    Appends missing status events, fills and commissions (deduplicated), and marks intents the
    broker never saw as `unknown` (never re-sent). Safe to run any number of times.
    """
    counts = {"status_events": 0, "fills": 0, "commissions": 0, "unknown": 0}
    seen_refs = {o.order_ref for o in snapshot.orders} | {e.order_ref for e in snapshot.executions}
    for report in snapshot.orders:
        if order_status_apply(report=report):
            counts["status_events"] += 1
    for execution in snapshot.executions:
        if fill_record(execution=execution):
            counts["fills"] += 1
    for commission in snapshot.commissions:
        if commission_record(commission=commission):
            counts["commissions"] += 1
    # Intents this process can't still be sending: made before it started, or long ago.
    grace = timezone.now() - timedelta(seconds=2 * settings.IB_REQUEST_TIMEOUT)
    from orders.selectors import order_queryset

    stuck = order_queryset().filter(current_status=S.PENDING_SUBMIT).exclude(client_order_id__in=seen_refs)
    for order in stuck:
        if order.created_at >= PROCESS_STARTED_AT and order.created_at >= grace:
            continue
        with transaction.atomic(durable=True):
            if _append_event(
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


# -- human approval ----------------------------------------------------------------------------
def _pending_approval(order_id) -> tuple[Order, OrderEvent]:
    order = _order_or_404(order_id)
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
    contract = _contract_of(order)
    request = OrderRequest(
        symbol=order.symbol,
        action=order.action,
        quantity=order.quantity,
        order_type=order.order_type,
        sec_type=order.sec_type,
        con_id=order.con_id,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        trail_amount=order.trail_amount,
        trail_percent=order.trail_percent,
        tif=order.tif,
        outside_rth=order.outside_rth,
        account=order.account,
        client_order_id=order.client_order_id,
    )
    adapter = runtime.adapter()
    try:
        gates.gate_account_mode(order.account)
        gates.gate_kill_switch(trading_halted())
        quote = adapter.quote_cached(con_id=contract.con_id)
        if not gates.quote_is_fresh(quote):
            quote = adapter.quote_snapshot(contract=contract)
        gates.gate_risk(
            request,
            contract,
            gates.RiskContext(quote=quote, orders_last_minute=0, duplicate_recent=False, halted=False),
        )
        if not gates.orders_armed():
            raise GatewayError(
                ErrorCode.INVALID_ORDER,
                "Orders are disabled (ORDERS_ENABLED=false).",
                http_status=409,
                details={"gate": "arming"},
            )
        gates.gate_live_override()
        if not runtime.orders_allowed():
            raise BrokerUnavailable("The broker is not connected and reconciled yet.", details={"gate": "arming"})
    except GatewayError as exc:
        _record_block(exc, request=request, actor=actor, account=order.account)
        raise
    with transaction.atomic(durable=True):
        _append_event(
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
        _append_event(
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
    from orders.selectors import order_queryset

    expired = 0
    for order in order_queryset().filter(current_status=S.PENDING_APPROVAL):
        with transaction.atomic(durable=True):
            latest = order_latest_event(order)
            if latest.status != S.PENDING_APPROVAL or not _approval_expired(latest):
                continue
            _append_event(
                order,
                status=S.EXPIRED,
                source=Source.WORKER,
                audit_event=events.ORDER_EXPIRED,
                reason=f"not approved within {settings.APPROVAL_TTL_S}s",
            )
            expired += 1
    return expired


# -- kill switch -------------------------------------------------------------------------------
def trading_halt(*, actor: Actor, reason: str = "") -> TradingSwitchEvent:
    """Block new orders and cancel every open order at the broker (global cancel)."""
    with transaction.atomic(durable=True):
        row = TradingSwitchEvent.objects.create(
            halted=True,
            reason=reason[:2000],
            actor_kind=actor.kind,
            actor_label=actor.label[:150],
            source=actor.source,
            correlation_id=actor.correlation_id,
        )
        audit_record(event=events.TRADING_HALTED, actor=actor, target_type="trading", data={"reason": reason})
    try:
        runtime.adapter().orders_cancel_all()
    except BrokerUnavailable:
        logger.warning("trading halted while the broker is unreachable: open orders could not be cancelled now")
    return row


def trading_resume(*, actor: Actor, reason: str = "") -> TradingSwitchEvent:
    """Release the kill switch: only a person signed in as an admin user, never a key or an agent."""
    if actor.kind != ActorKind.USER or not actor.is_admin or actor.source == Source.MCP:
        raise GatewayError(ErrorCode.PERMISSION_DENIED, "Only an admin user can resume trading.", http_status=403)
    with transaction.atomic(durable=True):
        row = TradingSwitchEvent.objects.create(
            halted=False,
            reason=reason[:2000],
            actor_kind=actor.kind,
            actor_label=actor.label[:150],
            source=actor.source,
            correlation_id=actor.correlation_id,
        )
        audit_record(event=events.TRADING_RESUMED, actor=actor, target_type="trading", data={"reason": reason})
    return row
