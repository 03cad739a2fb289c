"""The one gate sequence: every check an order passes, in order, for place, modify, approve and preview.

Stateless checks (validation, account mode, price and size risk, buying power, arming) run in the
caller's thread. The checks on shared state (kill switch, idempotency, orders per minute, duplicate
window) run inside the order pipeline right before the send (`orders.services.trading`); a preview
runs them read-only. `Checks.run()` stops at the first block (place); `Checks.collect()` runs every
check that can still run and reports each block (preview).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from brokers import runtime
from brokers.adapter import AccountRisk, ContractInfo, Quote
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from ibkrgw.models import api_key_usable
from marketdata.services import contract_resolve_one
from orders import gates
from orders.gates import GateBlocked
from orders.models import Order
from orders.pipeline import AdmissionGroup
from orders.selectors import orders_since, trading_halted
from orders.services.common import contract_spec_for
from orders.types import ORDER_TERMS, OrderRequest

logger = logging.getLogger(__name__)
ORDER_QUOTE_STREAMS = 20  # contracts whose quotes the order path keeps streaming (no snapshot per order)


@dataclass
class Checks:
    """One order's trip through the gates. `legs` are the bracket's exits (role, request)."""

    request: OrderRequest
    account: str
    legs: list[tuple[str, OrderRequest]] = field(default_factory=list)
    # What the broker is asked for an order goes ahead of queued reads; a preview is a read.
    for_order: bool = True
    # The caller's orders wait for an operator (APPROVAL_REQUIRED_FOR), which a bracket cannot do yet.
    approval_required: bool = False
    contract: ContractInfo | None = None
    quote: Quote | None = None
    reference: Decimal | None = None
    blocks: list[GatewayError] = field(default_factory=list)

    def run(self, steps: list[Callable[[Checks], None]]) -> None:
        for step in steps:
            step(self)

    def collect(self, steps: list[Callable[[Checks], None]]) -> list[GatewayError]:
        for step in steps:
            try:
                step(self)
            except _Skip:
                continue
            except GatewayError as exc:
                self.blocks.append(exc)
                if step in ESSENTIAL:
                    break
        return self.blocks


class _Skip(Exception):
    """A check that cannot run because an earlier one failed (preview only)."""


# -- the steps -------------------------------------------------------------------------------------
def shape(c: Checks) -> None:
    gates.gate_order_shape(c.request)
    gates.gate_bracket_shape(c.request, None)


def bracket_approval(c: Checks) -> None:
    gates.gate_bracket_approval(c.request, approval_required=c.approval_required)


def contract(c: Checks) -> None:
    found = contract_resolve_one(spec=contract_spec_for(c.request), for_order=c.for_order)
    gates.gate_contract_matches(c.request, found)
    c.contract = found


def whole_quantity(c: Checks) -> None:
    contract = _need_contract(c)
    gates.gate_whole_quantity(c.request, contract.sec_type)
    gates.gate_size_rules(c.request, contract)


def _need_contract(c: Checks) -> ContractInfo:
    if c.contract is None:
        raise _Skip
    return c.contract


def tick_size(c: Checks) -> None:
    gates.gate_tick_size(c.request, _need_contract(c))


def trading_hours(c: Checks) -> None:
    gates.gate_trading_hours(c.request, _need_contract(c), timezone.now())


def account_managed(c: Checks) -> None:
    gates.gate_account_managed(c.account, runtime.adapter().managed_accounts())


def account_mode(c: Checks) -> None:
    gates.gate_account_mode(c.account)


def max_quantity(c: Checks) -> None:
    gates.gate_max_quantity(c.request)


def fresh_quote(c: Checks) -> None:
    c.quote = order_quote(_need_contract(c), for_order=c.for_order)
    c.reference = gates.gate_fresh_quote(c.quote)


def _need_reference(c: Checks) -> Decimal:
    if c.reference is None or c.contract is None:
        raise _Skip
    return c.reference


def notional(c: Checks) -> None:
    gates.gate_notional(c.request, _need_contract(c), _need_reference(c))


def collar(c: Checks) -> None:
    gates.gate_collar(c.request, _need_reference(c))


def bracket_sides(c: Checks) -> None:
    gates.gate_bracket_shape(c.request, gates.reference_price(c.quote))


def buying_power(c: Checks) -> None:
    ref = _need_reference(c)
    risk = account_risk(c.account)
    gates.gate_buying_power_estimate(c.request, _need_contract(c), ref, risk)


def live_override(c: Checks) -> None:
    if gates.orders_armed():
        gates.gate_live_override()


def broker_ready(c: Checks) -> None:
    if gates.orders_armed() and not runtime.orders_allowed():
        raise BrokerUnavailable(
            "The broker is not connected and reconciled yet; no order was sent.", details={"gate": "arming"}
        )


ESSENTIAL = frozenset({contract})
# The order: validation -> account mode -> risk -> arming. Shared-state checks follow in the pipeline.
PLACE_STEPS: list[Callable[[Checks], None]] = [
    shape,
    bracket_approval,
    contract,
    whole_quantity,
    tick_size,
    trading_hours,
    account_managed,
    account_mode,
    max_quantity,
    fresh_quote,
    notional,
    collar,
    bracket_sides,
    buying_power,
    live_override,
    broker_ready,
]
# A recorded order changed later (modify): the same checks, minus what cannot change. A resting order may be
# changed while its market is closed, as at the broker.
EXISTING_ORDER_STEPS: list[Callable[[Checks], None]] = [
    shape,
    whole_quantity,
    tick_size,
    account_mode,
    max_quantity,
    fresh_quote,
    notional,
    collar,
    buying_power,
    live_override,
    broker_ready,
]
# A held order approved: it goes out now, so the market must be open for it, as for a new order.
APPROVAL_STEPS: list[Callable[[Checks], None]] = [shape, trading_hours, *EXISTING_ORDER_STEPS[1:]]


# -- shared state, read inside the pipeline (or read-only by a preview) ---------------------------
@dataclass(frozen=True)
class SharedState:
    halted: bool
    orders_last_minute: int
    duplicate_recent: bool


def same_order(request: OrderRequest, contract: ContractInfo) -> dict[str, Any]:
    """What makes two orders one order for the duplicate window: the contract they resolved to and their
    terms, however the request spelled the contract (defaults spelled out, or a con_id instead)."""
    return {"con_id": contract.con_id, **{name: getattr(request, name) for name in ORDER_TERMS}}


def same_order_key(account: str, terms: dict[str, Any]) -> tuple:
    """The key under which an admission group counts the orders it added with these terms."""
    return ("same_order", account, tuple(sorted(terms.items())))


def shared_state(
    *, account: str, terms: dict[str, Any], supplied_key: bool, group: AdmissionGroup | None = None
) -> SharedState:
    """The kill switch, the last minute's orders and the duplicate window, as the ledger has them now.

    `terms`: the order columns an earlier order must share to be the same order (`same_order`). Inside
    the pipeline `group` reads each fact once per commit and adds what the group's earlier placements
    added; a preview reads them afresh."""
    group = group or AdmissionGroup()
    since = timezone.now() - timedelta(seconds=60)
    duplicate = False
    if not supplied_key and settings.RISK_DUPLICATE_WINDOW_S > 0:
        window = timezone.now() - timedelta(seconds=settings.RISK_DUPLICATE_WINDOW_S)
        duplicate = group.added.get(same_order_key(account, terms), 0) > 0 or (
            Order.objects.filter(account=account, parent__isnull=True, created_at__gte=window, **terms).exists()
        )
    counted = group.once(("orders", account), lambda: orders_since(account=account, since=since))
    return SharedState(
        halted=group.once("halted", trading_halted),
        orders_last_minute=counted + group.added.get(("orders", account), 0),
        duplicate_recent=duplicate,
    )


def shared_state_gates(state: SharedState, *, legs: int) -> list[Callable[[], None]]:
    """The shared-state gates in order, as calls (the pipeline raises at the first, a preview collects)."""
    return [
        lambda: gates.gate_kill_switch(state.halted),
        armed_now,
        lambda: gates.gate_orders_per_minute(state.orders_last_minute, adding=legs),
        lambda: gates.gate_duplicate(state.duplicate_recent),
    ]


def armed_now() -> None:
    """The live override file, again at the order's turn: deleting it disarms at once, also for orders that
    passed their checks and were waiting behind others."""
    if gates.orders_armed():
        gates.gate_live_override()


def key_still_usable(key_id: str | None, group: AdmissionGroup | None = None) -> None:
    """At its turn in the pipeline, an order or a change asked with an API key goes on only while the key is
    usable (read after the ledger lock: a revocation committed before it counts; once per `group`)."""
    if key_id is None:
        return
    usable = group.once(("api_key", key_id), lambda: api_key_usable(key_id)) if group else api_key_usable(key_id)
    gates.gate_api_key_usable(usable)


def existing_order_gates(*, halted: bool) -> None:
    """Shared-state gates for an order already recorded (approval, modify), inside the pipeline."""
    gates.gate_kill_switch(halted)
    if not gates.orders_armed():
        raise GateBlocked(
            "arming", ErrorCode.INVALID_ORDER, "Orders are disabled (ORDERS_ENABLED=false).", http_status=409
        )
    gates.gate_live_override()


# -- market data and account state the checks read ---------------------------------------------------
_streams: OrderedDict[int, ContractInfo] = OrderedDict()
_streams_lock = threading.Lock()
_streams_adapter: list[Any] = [None]  # the adapter the streams were opened on


def order_quote(contract: ContractInfo, *, for_order: bool = True) -> Quote | None:
    """A fresh quote for the price checks: the streamed one when there is one, else a snapshot.

    The contracts orders go to keep streaming (the most recent ORDER_QUOTE_STREAMS), so the next
    order on them costs no market-data request."""
    adapter = runtime.adapter()
    quote = adapter.quote_cached(con_id=contract.con_id)
    if gates.quote_is_fresh(quote):
        _stream_touch(contract.con_id)
        return quote
    quote = adapter.quote_snapshot(contract=contract, for_order=for_order)
    _stream_hold(contract)
    return quote


def _stream_touch(con_id: int) -> None:
    with _streams_lock:
        if con_id in _streams:
            _streams.move_to_end(con_id)


def _stream_hold(contract: ContractInfo) -> None:
    adapter = runtime.adapter()
    with _streams_lock:
        if _streams_adapter[0] is not adapter:  # a new broker runtime holds none of the old streams
            _streams.clear()
            _streams_adapter[0] = adapter
        if contract.con_id in _streams:
            _streams.move_to_end(contract.con_id)
            return
        _streams[contract.con_id] = contract
        dropped = _streams.popitem(last=False)[0] if len(_streams) > ORDER_QUOTE_STREAMS else None
    try:
        adapter.quote_subscribe(contract=contract)
        if dropped is not None:
            adapter.quote_unsubscribe(con_id=dropped)
    except GatewayError:
        logger.debug("could not hold a quote stream for %s", contract.symbol, exc_info=True)


def account_risk(account: str) -> AccountRisk | None:
    try:
        return runtime.adapter().account_risk(account=account)
    except BrokerUnavailable:
        return None


def blocks_payload(blocks: list[GatewayError]) -> list[dict[str, Any]]:
    return [
        {
            "gate": exc.details.get("gate", "validation"),
            "code": str(exc.code),
            "http_status": exc.http_status,
            "message": exc.message,
            "details": {k: v for k, v in exc.details.items() if k != "gate"},
        }
        for exc in blocks
    ]
