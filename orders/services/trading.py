"""Placing, previewing, cancelling and modifying orders.

Every call runs the stateless gates in the caller's thread (`checks`), then hands one command to
the order pipeline, which runs the shared-state gates, records the intent and sends it, in arrival
order. A preview runs the same chain as a dry run and reports every gate that would block.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import events
from audit.services import audit_record, ledger_write_lock
from brokers import runtime
from brokers.adapter import ContractInfo, OrderPreview
from brokers.selectors import account_default
from ibkrgw import metrics
from ibkrgw.actors import Actor
from ibkrgw.errors import BROKER_AWAY_CODES, ErrorCode, GatewayError
from ibkrgw.web.render import iso_utc
from orders import gates, publish
from orders.gates import GateBlocked
from orders.models import Order, OrderEvent, RecordedRows
from orders.models import OrderStatus as S
from orders.pipeline import AdmissionGroup, Command, pipeline
from orders.selectors import (
    order_broker_id,
    order_get_or_error,
    order_latest_event,
    order_pk_for_key,
    order_to_act_on,
    order_with_rows,
    trading_halted,
)
from orders.services import checks
from orders.services.common import (
    SubmitResult,
    broker_request_for,
    broker_request_for_order,
    decimal_json,
    gate_block_record,
    late_send_window,
    order_contract,
    order_contract_with_rules,
    order_event_append,
    order_request_of,
    order_terms,
    request_hash,
    terms_json,
    unreadable_order_named,
)
from orders.services.recording import order_ref_remember, order_refs_forget
from orders.services.sending import order_send_with_exits
from orders.state import TERMINAL
from orders.types import OrderRequest, OrderSent

logger = logging.getLogger(__name__)
GENERATED_ID_PREFIX = "gw-"
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SENT_RECORD_WAIT_S = 2.0
# A bracket "<key>" places its exits as "<key>.tp" and "<key>.sl": no other order may take those keys.
BRACKET_EXIT_SUFFIXES = (".tp", ".sl")
INTENT_REASONS = {
    S.SIMULATED: "ORDERS_ENABLED=false: recorded, not sent",
    S.PENDING_APPROVAL: "Waiting for an operator to approve it in the admin.",
}
MODIFIABLE = (S.SUBMITTED, S.PARTIALLY_FILLED, S.INACTIVE)


# -- request normalisation ---------------------------------------------------------------------
def _keyed_request(request: OrderRequest, idempotency_key: str | None) -> tuple[OrderRequest, bool]:
    """The request with its idempotency key and account filled in, and whether the caller chose the key."""
    if idempotency_key == "":  # sent empty (an unset variable in a script): refused, not taken as no key
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "The Idempotency-Key header is empty: give a key or leave the header out.",
            details={"fields": ["Idempotency-Key"]},
        )
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
    if key.endswith(BRACKET_EXIT_SUFFIXES):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"client_order_id / Idempotency-Key may not end in {' or '.join(BRACKET_EXIT_SUFFIXES)}: "
            "those name a bracket's exits.",
            details={"fields": ["client_order_id"]},
        )
    request = replace(request, client_order_id=key or f"{GENERATED_ID_PREFIX}{uuid.uuid4().hex[:24]}")
    # The account is part of what is compared: naming the default account or leaving it out is one order.
    return replace(request, account=request.account or account_default()), bool(key)


def _first_status(actor: Actor) -> str:
    if not gates.orders_armed():
        return S.SIMULATED
    return S.PENDING_APPROVAL if actor.kind in settings.APPROVAL_REQUIRED_FOR else S.PENDING_SUBMIT


# -- preview: a dry run of the whole chain -----------------------------------------------------------
@dataclass(frozen=True)
class PreviewResult:
    contract: ContractInfo | None
    account: str
    preview: OrderPreview | None  # the broker's what-if (commission, margin), when it could be had
    blocks: list[dict]  # every gate that would block, with the code place would return
    # The status place would record: simulated, pending_approval, submitted or refused; or `replayed`: the key
    # already placed this very order, and place would answer with it.
    would_be: str
    what_if_error: str = ""


def order_preview(*, request: OrderRequest, actor: Actor, idempotency_key: str | None = None) -> PreviewResult:
    """Run every gate without recording or sending anything; ask the broker for a what-if."""
    request, supplied_key = _keyed_request(request, idempotency_key)
    account = request.account
    trip = checks.Checks(
        request=request,
        account=account,
        legs=bracket_children(request),
        for_order=False,
        approval_required=actor.kind in settings.APPROVAL_REQUIRED_FOR,
    )
    digest = request_hash(request)
    replay: SubmitResult | None = None
    reused: GatewayError | None = None
    try:
        replay = _replay(account, request.client_order_id, digest)
    except GatewayError as exc:
        reused = exc
    if replay is not None:
        # Place would answer with the order this key already placed, running no gate: so does its preview.
        return PreviewResult(
            contract=order_contract(replay.order), account=account, preview=None, blocks=[], would_be="replayed"
        )
    blocks = trip.collect(checks.PLACE_STEPS)
    if reused is not None:
        blocks.append(reused)
    # With the contract unknown (the broker down), the same request as typed is still the same order.
    terms = checks.same_order(request, trip.contract) if trip.contract is not None else {"request_hash": digest}
    state = checks.shared_state(account=account, terms=terms, supplied_key=supplied_key)
    for gate in checks.shared_state_gates(state, legs=1 + len(trip.legs)):
        try:
            gate()
        except GatewayError as exc:
            blocks.append(exc)
    what_if, what_if_error = None, ""
    # The broker's what-if only for an order it could take: not one refused as malformed or for an account
    # the gateway does not manage (the broker would only answer with an error of its own).
    malformed = any(getattr(exc, "gate", "") == "validation" for exc in blocks)
    if trip.contract is not None and not malformed:
        try:
            what_if = runtime.adapter().order_preview(request=broker_request_for(request, trip.contract, account))
            gates.gate_buying_power(what_if)
        except GateBlocked as exc:
            blocks.append(exc)
        except GatewayError as exc:
            what_if_error = exc.message
    blocks_out = checks.blocks_payload(_unique(blocks))
    status = "refused" if blocks_out else _first_status(actor)
    if status == S.PENDING_SUBMIT:
        status = S.SUBMITTED
    return PreviewResult(
        contract=trip.contract,
        account=account,
        preview=what_if,
        blocks=blocks_out,
        would_be=status,
        what_if_error=what_if_error,
    )


def _unique(blocks: list[GatewayError]) -> list[GatewayError]:
    seen, out = set(), []
    for exc in blocks:
        if str(exc.code) not in seen:
            seen.add(str(exc.code))
            out.append(exc)
    return out


# -- submit ----------------------------------------------------------------------------------
def order_submit(*, request: OrderRequest, actor: Actor, idempotency_key: str | None = None) -> SubmitResult:
    """Run the gates, record the intent, then (if armed) send it. Safe to call twice with one key.

    Returns the order (`replayed=True` when the key was seen before with the same body).
    Raises GateBlocked (4xx, audited) when a gate blocks, 422 idempotency_key_reused when the key
    was used for a different order, 503 broker_unavailable when the broker is not ready.
    """
    try:
        request, supplied_key = _keyed_request(request, idempotency_key)
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=request.account)
        raise
    account = request.account
    digest = request_hash(request)
    # 6. idempotency first: a replay never runs the gates again.
    replay = _replay_or_refuse(request, actor, account, digest)
    if replay is not None:
        return replay
    trip = checks.Checks(
        request=request,
        account=account,
        legs=bracket_children(request),
        approval_required=actor.kind in settings.APPROVAL_REQUIRED_FOR,
    )
    try:
        try:
            trip.run(checks.PLACE_STEPS)
        except GatewayError as exc:
            if exc.code in BROKER_AWAY_CODES:
                # Halted during an outage: the kill switch's refusal is the one that outlasts the outage (a
                # client retrying a 503 would retry into a halt), so it is the answer.
                gates.gate_kill_switch(trading_halted())
            raise
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=account)
        raise
    assert trip.contract is not None  # noqa: S101 - the contract step ran
    contract = trip.contract
    terms = checks.same_order(request, contract)
    status = _first_status(actor)

    def admit(group: AdmissionGroup) -> tuple[Order, bool]:
        group.once("lock", ledger_write_lock)
        checks.key_still_usable(actor.key_id, group)
        key = ("key", account, request.client_order_id)
        if group.added.get(key):  # the same key earlier in this group: a replay (or a reuse)
            replay = _replay(account, request.client_order_id, digest)
            assert replay is not None  # noqa: S101 - it was recorded in this transaction
            return replay.order, True
        state = checks.shared_state(account=account, terms=terms, supplied_key=supplied_key, group=group)
        legs = 1 + len(trip.legs)
        for gate in checks.shared_state_gates(state, legs=legs):
            gate()
        # A key committed since this request looked (another process) fails the insert: the pipeline
        # rolls this command's savepoint back and the caller replays that order (below).
        order = _record_intent(request, contract, account, digest, trip, actor, status)
        group.add(key, 1)
        group.add(("orders", account), legs)
        group.add(checks.same_order_key(account, terms), 1)
        return order, False

    def send(admitted: tuple[Order, bool]) -> tuple[Order, bool, list[OrderSent]]:
        order, replayed = admitted
        if replayed or status != S.PENDING_SUBMIT:
            return order, replayed, []
        children = order.recorded.children if order.recorded is not None else None
        return order, False, order_send_with_exits(order, contract, actor, children=children)

    def refused(exc: Exception) -> None:
        if isinstance(exc, GatewayError):
            gate_block_record(exc, request=request, actor=actor, account=account)

    try:
        order, replayed, acks = pipeline().execute(Command(admit=admit, after_commit=send, on_refused=refused))
    except IntegrityError:
        # The key was committed by an earlier commit since this request looked: replay that order.
        replay = _replay_or_refuse(request, actor, account, digest)
        if replay is None:
            raise
        return replay
    if not replayed and status == S.PENDING_SUBMIT:
        # The send and the broker's answer added rows: answer with the order as the ledger has it now.
        _wait_recorded(acks)
        order = order_with_rows(order, children=order.recorded.children if order.recorded is not None else None)
    return SubmitResult(order=order, replayed=replayed)


def _wait_recorded(acks: list[OrderSent]) -> None:
    """Wait (bounded) until the recorder has written the acknowledgements, so the response shows them."""
    for sent in acks:
        if not sent.written.wait(SENT_RECORD_WAIT_S):
            logger.warning("order %s: acknowledgement not recorded within %ss", sent.order_id, SENT_RECORD_WAIT_S)


def _replay_or_refuse(request: OrderRequest, actor: Actor, account: str, digest: str) -> SubmitResult | None:
    """The order this key already placed, or None; a key used for a different order is refused, audited."""
    try:
        return _replay(account, request.client_order_id, digest)
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=account)
        raise


def _replay(account: str, client_order_id: str, digest: str) -> SubmitResult | None:
    # Asked on every submit and nearly always absent: look for the key alone, read the order if found.
    found = order_pk_for_key(account=account, client_order_id=client_order_id)
    if found is None:
        return None
    existing = order_get_or_error(order_id=found)  # 409 ledger_unreadable for a row changed behind our back
    if existing.request_hash != digest:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            f"client_order_id {client_order_id!r} was already used for a different order.",
            http_status=422,
            details={"order_id": str(existing.pk), "gate": "idempotency"},
        )
    return SubmitResult(order=existing, replayed=True)


def _record_intent(
    request: OrderRequest,
    contract: ContractInfo,
    account: str,
    digest: str,
    trip: checks.Checks,
    actor: Actor,
    status: str,
) -> Order:
    """Intent first: the order rows, their first events and audit entries commit before any send.

    A bracket is one request: the entry plus its take-profit and stop-loss children, linked by
    `parent` and one OCA group. Runs inside the pipeline's admission transaction.
    """
    # The exits cancel each other (one OCA group); the entry is linked to them as their parent.
    oca_group = f"{request.client_order_id}.oca"
    checked = _checked_terms(trip)
    order = _intent_row(request, contract, account, digest, checked, actor, status, role="entry" if trip.legs else "")
    for role, child in trip.legs:
        exit_order = _intent_row(
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
        assert order.recorded is not None  # noqa: S101 - set by _intent_row
        order.recorded.children.append(exit_order)
    return order


def _checked_terms(trip: checks.Checks) -> dict | None:
    """What the gates saw, kept on the order (the broker's what-if is `POST orders/preview/`)."""
    if trip.reference is None or trip.contract is None:
        return None
    return {
        "reference_price": decimal_json(trip.reference),
        "notional": decimal_json(
            gates.order_notional(trip.request, trip.contract, trip.reference).quantize(Decimal("0.01"))
        ),
        "quote_time": iso_utc(trip.quote.time) if trip.quote else None,  # UTC with a Z, as every time
    }


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
    checked: dict | None,
    actor: Actor,
    status: str,
    *,
    parent: Order | None = None,
    role: str,
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
        preview=checked,
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
    order.recorded = RecordedRows(events=[event])
    order_refs_forget(order.client_order_id)
    if status == S.PENDING_SUBMIT:  # the broker will report on it by its orderRef
        transaction.on_commit(lambda: order_ref_remember(order))
    transaction.on_commit(lambda: publish.order_event(order_id=order.pk, event_id=event.pk, seq=entry.seq))
    transaction.on_commit(lambda: metrics.ORDER_EVENTS.labels(status=status).inc())
    return order


# -- cancel and modify -------------------------------------------------------------------------
@unreadable_order_named
def order_cancel(*, order_id, actor: Actor) -> Order:
    """Cancel an order: withdraw it while it waits for approval, else ask the broker to cancel it.

    Idempotent: cancelling a cancelled order (or one already cancelling) answers the order. Nothing is
    recorded as `cancel_pending` unless the cancel reached the broker connection.
    """
    order_to_act_on(order_id=order_id)  # 404 (or 409 for a row that cannot be read) before queueing

    def cancel() -> Order:
        order = order_get_or_error(order_id=order_id)
        latest = order_latest_event(order)
        assert latest is not None  # noqa: S101 - every order has its intent event
        if latest.status == S.PENDING_APPROVAL:
            with transaction.atomic(durable=True):
                order_event_append(
                    order,
                    status=S.CANCELLED,
                    actor=actor,
                    source=actor.source,
                    code="withdrawn",
                    reason=f"withdrawn before approval by {actor.label}",
                    audit_event=events.ORDER_WITHDRAWN,
                )
            return order
        if latest.status in (S.CANCELLED, S.CANCEL_PENDING):
            # Already cancelled, or its cancel reached the broker: a second one would only be refused there
            # (10148). One the broker leaves unanswered is checked with it (the worker's unanswered cancels).
            return order
        if latest.status in TERMINAL:
            raise GatewayError(
                ErrorCode.ORDER_STATE_CONFLICT,
                f"An order in state {latest.status} cannot be cancelled.",
                http_status=409,
                details={"status": latest.status},
            )
        adapter = runtime.adapter()
        broker_id = _broker_id(order)
        _require_own_connection(order, adapter)
        if broker_id is None and latest.status == S.UNKNOWN:
            return _cancel_unknown(order, latest, actor, adapter)
        if broker_id is None:
            raise GatewayError(
                ErrorCode.ORDER_STATE_CONFLICT,
                "The broker has not acknowledged this order; reconciliation will settle it.",
                http_status=409,
                details={"status": latest.status},
            )
        adapter.order_cancel(broker_order_id=broker_id)  # raises (nothing recorded) when it cannot be sent
        with transaction.atomic(durable=True):
            # Read again under the writers' lock: the broker's own PendingCancel may have been recorded meanwhile.
            ledger_write_lock()
            now = order_latest_event(order)
            assert now is not None  # noqa: S101 - read above, and events are never deleted
            appended = now.status != S.CANCEL_PENDING and order_event_append(
                order,
                status=S.CANCEL_PENDING,
                actor=actor,
                source=actor.source,
                audit_event=events.ORDER_CANCEL_REQUESTED,
                strict=False,
                latest=now,
            )
            if not appended:
                # The broker's own report moved the order on first: who asked is still on record.
                audit_record(
                    event=events.ORDER_CANCEL_REQUESTED,
                    actor=actor,
                    target_type="order",
                    target_id=str(order.pk),
                    data={"broker_order_id": broker_id},
                )
        return order

    return pipeline().run(cancel)


def _cancel_unknown(order: Order, latest: OrderEvent, actor: Actor, adapter) -> Order:
    """Cancel an order whose send has an unknown outcome: the broker is asked what it holds first.

    With no trace of the order at the broker (not working, not among its completed orders, no execution)
    it is recorded `cancelled` (code `not_at_broker`): it is working nowhere and is never sent. With a
    trace, the broker's reports are reconciled first and the caller is told to cancel again once they show.
    """
    settles_at = latest.at + late_send_window()
    if timezone.now() < settles_at:
        # A send that timed out a moment ago may still reach the broker: asking now would prove nothing.
        wait_s = math.ceil((settles_at - timezone.now()).total_seconds())
        raise GatewayError(
            ErrorCode.ORDER_STATE_CONFLICT,
            f"This order's send may still be on its way to the broker; cancel it again in {wait_s} s.",
            http_status=409,
            details={"status": S.UNKNOWN, "retry_after_s": wait_s},
        )
    snapshot = adapter.snapshot()  # raises (nothing recorded) when the broker cannot be asked
    ref = order.client_order_id
    if any(report.order_ref == ref for report in snapshot.orders) or any(
        execution.order_ref == ref for execution in snapshot.executions
    ):
        adapter.orders_recheck()
        raise GatewayError(
            ErrorCode.ORDER_STATE_CONFLICT,
            "The broker reports this order: its status is being brought up to date from the broker's reports. "
            "Cancel it again once it shows.",
            http_status=409,
            details={"status": S.UNKNOWN, "at_broker": True},
        )
    with transaction.atomic(durable=True):
        order_event_append(
            order,
            status=S.CANCELLED,
            actor=actor,
            source=actor.source,
            code="not_at_broker",
            reason=f"Cancelled by {actor.label}: the broker has no trace of this order (not working, not among its "
            "completed orders, no execution it still reports); it was never sent again.",
            audit_event=events.ORDER_CLOSED,
            strict=False,
        )
    return order


def _broker_id(order: Order) -> int | None:
    recorded = order_broker_id(order)
    if recorded is not None:
        return recorded
    sent = pipeline().sent_ids.get(order.pk)
    return sent[0] if sent else None


@unreadable_order_named
def order_modify(
    *,
    order_id,
    actor: Actor,
    quantity: Decimal | None = None,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
) -> Order:
    """Change quantity or prices of a working order: the same gates as a new order, then the send;
    the change is recorded only once it reached the broker connection.

    Only the terms given change; the others stay as they are when the change takes its turn in the
    pipeline, so two changes racing each other both hold (each checked with the other's terms)."""
    order = order_to_act_on(order_id=order_id)
    latest = order_latest_event(order)
    assert latest is not None  # noqa: S101 - every order has its intent event
    _require_modifiable(latest)
    given = {"quantity": quantity, "limit_price": limit_price, "stop_price": stop_price}

    def with_given(in_force: dict[str, Decimal | None]) -> dict[str, Decimal | None]:
        return {name: value if value is not None else in_force[name] for name, value in given.items()}

    current = order_terms(order)
    checked_terms = with_given(current)
    if checked_terms == current:
        return order
    contract = order_contract_with_rules(order)
    request, reference = _modification_checked(order, checked_terms, contract, latest, actor)

    def modify() -> Order:
        fresh = order_latest_event(order)
        assert fresh is not None  # noqa: S101 - every order has its intent event
        in_force = order_terms(order)
        new_terms = with_given(in_force)
        if new_terms == in_force:
            return order  # another change made it so meanwhile
        new_request, new_reference = request, reference
        if new_terms != checked_terms:
            # Another change took effect since this one was checked: check the order they make together.
            new_request, new_reference = _modification_checked(order, new_terms, contract, fresh, actor)
        try:
            _require_modifiable(fresh)
            if new_terms["quantity"] < fresh.filled_quantity:
                raise gates.invalid("quantity cannot go below the filled quantity.", field="quantity")
            # Here, so two legs changed at once are checked one after the other.
            _require_bracket_kept(order, new_terms, new_reference)
            checks.key_still_usable(actor.key_id)  # a change that waited for its turn while its key was revoked
            checks.existing_order_gates(halted=trading_halted())
        except GatewayError as exc:
            gate_block_record(exc, request=new_request, actor=actor, account=order.account)
            raise
        adapter = runtime.adapter()
        _require_own_connection(order, adapter)
        broker_id = _broker_id(order)
        ack = adapter.order_place(
            request=broker_request_for_order(order, contract, broker_order_id=broker_id, **new_terms)
        )
        if ack.broker_order_id != broker_id:
            logger.warning("modify of %s got a new broker id %s", order.pk, ack.broker_order_id)
        with transaction.atomic(durable=True):
            # Fills the recorder wrote while the change was on its way count: the filled quantity never
            # goes back, and an order that finished meanwhile records no change (strict=False).
            ledger_write_lock()
            now = order_latest_event(order)
            assert now is not None  # noqa: S101 - read above, and events are never deleted
            modified = terms_json(new_terms)
            appended = order_event_append(
                order,
                status=now.status,
                actor=actor,
                source=actor.source,
                data={"modified": modified},
                remaining=max(new_terms["quantity"] - now.filled_quantity, Decimal(0)),
                audit_event=events.ORDER_MODIFIED,
                strict=False,
                latest=now,
            )
            if appended is None:
                # The order finished meanwhile: the change reached the broker all the same, and who asked
                # for it stays on record.
                audit_record(
                    event=events.ORDER_MODIFIED,
                    actor=actor,
                    target_type="order",
                    target_id=str(order.pk),
                    data={"modified": modified, "status": now.status},
                )
        return order

    return pipeline().run(modify)


def _modification_checked(
    order: Order,
    terms: dict[str, Decimal | None],
    contract: ContractInfo,
    latest: OrderEvent,
    actor: Actor,
) -> tuple[OrderRequest, Decimal | None]:
    """The order with `terms` through the gates of a new order (refusals audited), and the market price the
    price checks used (a bracket's exits are kept on their side of a market entry by it)."""
    request = order_request_of(order, **terms)
    trip = checks.Checks(request=request, account=order.account, contract=contract)
    quantity = terms["quantity"]
    assert quantity is not None  # noqa: S101 - an order always has a quantity
    try:
        if quantity < latest.filled_quantity:
            raise gates.invalid("quantity cannot go below the filled quantity.", field="quantity")
        trip.run(checks.EXISTING_ORDER_STEPS)
    except GatewayError as exc:
        gate_block_record(exc, request=request, actor=actor, account=order.account)
        raise
    return request, gates.reference_price(trip.quote)


def _require_bracket_kept(order: Order, new_terms: dict[str, Decimal | None], reference: Decimal | None) -> None:
    """A bracket stays one bracket: its legs keep one quantity (an exit larger than the position would open a
    new one), and while its entry waits, each exit stays on its side of the entry (a market entry's side: the
    market price, as when it was placed). Once the entry has filled, its exits protect a position: moving them
    (a stop up to break-even) is the trader's."""
    if not order.role:
        return
    if new_terms["quantity"] != order_terms(order)["quantity"]:
        raise gates.invalid(
            "A bracket's entry and exits share one quantity: cancel the bracket and place it again to change it.",
            field="quantity",
        )
    entry = order if order.parent_id is None else order.parent
    assert entry is not None  # noqa: S101 - an exit has its entry
    entry_latest = order_latest_event(entry)
    if entry_latest is None or entry_latest.filled_quantity > 0 or entry_latest.status in TERMINAL:
        return
    terms = {entry.role: new_terms if entry.pk == order.pk else order_terms(entry)}
    for leg in Order.objects.filter(parent=entry):
        latest = order_latest_event(leg)
        if latest is not None and latest.status not in TERMINAL:
            terms[leg.role] = new_terms if leg.pk == order.pk else order_terms(leg)
    shape = order_request_of(
        entry,
        limit_price=terms["entry"]["limit_price"],
        take_profit=terms["take_profit"]["limit_price"] if "take_profit" in terms else None,
        stop_loss=terms["stop_loss"]["stop_price"] if "stop_loss" in terms else None,
    )
    gates.gate_bracket_shape(shape, reference)


def _require_modifiable(latest: OrderEvent) -> None:
    if latest.status not in MODIFIABLE:
        raise GatewayError(
            ErrorCode.ORDER_NOT_MODIFIABLE,
            f"An order in state {latest.status} cannot be modified.",
            http_status=409,
            details={"status": latest.status},
        )


def order_client_id(order: Order) -> int | None:
    """The IB client id the order was placed through, as recorded on its events."""
    for data in OrderEvent.objects.filter(order=order).order_by("-id").values_list("data", flat=True):
        if data and data.get("client_id") is not None:
            return int(data["client_id"])
    sent = pipeline().sent_ids.get(order.pk)
    return sent[1] if sent else None


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
