"""What the console shows, read through the selectors and the broker adapter; nothing here writes.

Marks: every price the console shows for a held contract (position rows, the P&L card, net
liquidation, confirmation pages) comes from `mark_of`: the quote's last trade, else the mid, else
the close, as the gates' reference price. One source, so the rows and the totals always agree.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from audit.chain import verify_chain
from audit.models import AuditEntry
from audit.stored import UNREADABLE_ERRORS
from brokers import runtime
from brokers.adapter import ContractInfo, ContractSpec, Quote
from brokers.selectors import account_summary_get, health_get, pnl_get, position_list
from ibkrgw.errors import GatewayError
from marketdata.services import quote_get
from orders import gates
from orders.models import Order, OrderEvent

ACCOUNT_TAGS = {
    "NetLiquidation": "net_liquidation",
    "TotalCashValue": "cash",
    "BuyingPower": "buying_power",
    "AvailableFunds": "available_funds",
    "InitMarginReq": "init_margin",
    "MaintMarginReq": "maint_margin",
    "ExcessLiquidity": "excess_liquidity",
}
CHAIN_CHECK_EVERY_S = 60.0


# -- the status header of every page -------------------------------------------------------------
def header_status() -> dict[str, Any]:
    """Mode, armed state, kill switch, gateway and reconciliation: what every console page shows on top."""
    try:
        health = health_get()
    except DatabaseError:
        health = None
    armed = settings.ORDERS_ENABLED
    armed_note = "orders are sent to the gateway" if armed else "orders are recorded as simulated"
    if armed and settings.TRADING_MODE == "live":
        try:
            gates.gate_live_override()
        except GatewayError as exc:
            armed, armed_note = False, exc.message
    if health is None:
        return {
            "mode": settings.TRADING_MODE,
            "armed": armed,
            "armed_note": armed_note,
            "halted": None,
            "gateway": "unknown",
            "connected": False,
            "reconciliation": "unknown",
        }
    return {
        "mode": settings.TRADING_MODE,
        "armed": armed,
        "armed_note": armed_note,
        "halted": health.get("trading_halted"),
        "gateway": health["gateway"]["state"],
        "connected": health["gateway"]["connected"],
        "reconciliation": health["reconciliation"],
    }


def with_fill_progress(orders: QuerySet[Order]) -> QuerySet[Order]:
    """Orders annotated with `filled_qty` and `avg_px` from their latest event (the lists' columns)."""

    def latest(field: str) -> Subquery:
        return Subquery(OrderEvent.objects.filter(order=OuterRef("pk")).order_by("-id").values(field)[:1])

    return orders.annotate(filled_qty=latest("filled_quantity"), avg_px=latest("average_fill_price"))


# -- marks and quotes ------------------------------------------------------------------------------
def mark_of(quote: Quote | None) -> Decimal | None:
    """The one price the console marks a contract at (same rule as the gates' reference price)."""
    return gates.reference_price(quote)


def quote_for_contract(contract: ContractInfo) -> Quote | None:
    """The streaming quote when there is one, else a snapshot; None when the broker cannot answer."""
    adapter = runtime.adapter()
    try:
        return adapter.quote_cached(con_id=contract.con_id) or adapter.quote_snapshot(contract=contract)
    except GatewayError:
        return None


def quote_for_order(order: Order) -> Quote | None:
    try:
        _, quote = quote_get(spec=ContractSpec(symbol=order.symbol, sec_type=order.sec_type, con_id=order.con_id))
    except GatewayError:
        return None
    return quote


def multiplier(value: str | None) -> Decimal:
    try:
        return Decimal(value) if value else Decimal(1)
    except ArithmeticError:
        return Decimal(1)


def _q(value: Decimal | None, places: str = "0.01") -> Decimal | None:
    return None if value is None else value.quantize(Decimal(places))


# -- the account card -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionRow:
    account: str
    contract: ContractInfo
    quantity: Decimal
    average_cost: Decimal | None
    mark: Decimal | None
    market_value: Decimal | None
    unrealized_pnl: Decimal | None


def _position_row(position, *, streamed_only: bool = False) -> PositionRow:
    contract = position.contract
    if streamed_only:
        # Nothing is asked of the broker: the streaming quote, else the broker's own portfolio mark.
        mark = mark_of(runtime.adapter().quote_cached(con_id=contract.con_id)) or position.market_price
    else:
        mark = mark_of(quote_for_contract(contract))
    mult = multiplier(contract.multiplier)
    value = unrealized = None
    if mark is not None:
        value = position.quantity * mark * mult
        if position.average_cost is not None:
            # IB's average cost already includes the multiplier.
            unrealized = value - position.quantity * position.average_cost
    return PositionRow(
        account=position.account,
        contract=contract,
        quantity=position.quantity,
        average_cost=_q(position.average_cost, "0.0001"),
        mark=mark,
        market_value=_q(value),
        unrealized_pnl=_q(unrealized),
    )


def account_state(health: dict[str, Any] | None = None) -> dict[str, Any]:
    """Account figures, positions and P&L at one set of marks, or why they cannot be shown."""
    health = health or health_get()
    if not health["gateway"]["connected"]:
        return {"available": False, "message": f"Broker unavailable (gateway {health['gateway']['state']})."}
    try:
        positions = [_position_row(p) for p in position_list() if p.quantity]
        summary = account_summary_get()
        pnl = pnl_get()
    except GatewayError as exc:
        return {"available": False, "message": f"Broker unavailable: {exc.message}"}
    figures: dict[str, Decimal | None] = dict.fromkeys(ACCOUNT_TAGS.values())
    for value in summary.values:
        name = ACCOUNT_TAGS.get(value.tag)
        if name and figures[name] is None and value.currency in ("USD", "BASE", ""):
            try:
                figures[name] = Decimal(value.value)
            except ArithmeticError:
                pass
    unrealized = sum((p.unrealized_pnl or Decimal(0) for p in positions), Decimal(0))
    marked = all(p.mark is not None for p in positions)
    # Net liquidation at the console's marks: cash plus what the positions are worth now
    # (futures count by their unrealised P&L: their value is settled daily).
    net_liq = None
    if figures["cash"] is not None and marked:
        net_liq = figures["cash"] + sum(
            ((p.unrealized_pnl or Decimal(0)) if p.contract.sec_type == "FUT" else (p.market_value or Decimal(0)))
            for p in positions
        )
    daily = pnl.daily_pnl
    if daily is not None and pnl.unrealized_pnl is not None and marked:
        # Daily P&L is realised plus the change in unrealised: swap the broker's marks for ours.
        daily = daily - pnl.unrealized_pnl + unrealized
    return {
        "available": True,
        "account": pnl.account,
        "positions": positions,
        "figures": figures,
        "net_liquidation": _q(net_liq) if net_liq is not None else figures["net_liquidation"],
        "broker_net_liquidation": figures["net_liquidation"],
        "pnl": {
            "account": pnl.account,
            "daily": _q(daily),
            "unrealized": _q(unrealized) if marked else pnl.unrealized_pnl,
            "realized": pnl.realized_pnl,
        },
    }


def positions_marked_streamed() -> list[PositionRow]:
    """Positions at marks the connection already has (for background chores: no broker request)."""
    return [_position_row(p, streamed_only=True) for p in position_list() if p.quantity]


# -- order context: the numbers a person needs before confirming --------------------------------
def order_context(
    *,
    action: str,
    quantity: Decimal,
    order_type: str,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    quote: Quote | None,
    mult: Decimal = Decimal(1),
    preview: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quote, the price the order trades at, its distance from the market, notional and margin impact."""
    mark = mark_of(quote)
    price = limit_price if limit_price is not None else stop_price if stop_price is not None else mark
    distance = distance_pct = None
    if mark is not None and price is not None and order_type not in ("MKT", "MOC"):
        distance = price - mark
        distance_pct = (distance / mark * 100).quantize(Decimal("0.01")) if mark else None
    notional = _q(quantity * price * mult) if price is not None else None
    preview = preview or {}
    return {
        "quote": quote,
        "mark": mark,
        "price": price,
        "distance": distance,
        "distance_pct": distance_pct,
        "notional": notional,
        "commission": preview.get("commission"),
        "init_margin_change": preview.get("init_margin_change"),
        "maint_margin_change": preview.get("maint_margin_change"),
        "equity_with_loan_after": preview.get("equity_with_loan_after"),
        "init_margin_after": preview.get("init_margin_after"),
        "warning": preview.get("warning") or "",
        "action": action,
    }


def approval_item(order: Order, held_at: datetime) -> dict[str, Any]:
    quote = quote_for_order(order)
    expires_at = held_at + timedelta(seconds=settings.APPROVAL_TTL_S)
    return {
        "order": order,
        "held_at": held_at,
        "expires_at": expires_at,
        "expires_in_s": max(0, int((expires_at - timezone.now()).total_seconds())),
        **order_context(
            action=order.action,
            quantity=order.quantity,
            order_type=order.order_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            quote=quote,
            mult=multiplier(order.multiplier),
            preview=_decimals(order.preview),
        ),
    }


def _decimals(data: dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = Decimal(value) if isinstance(value, str) and key != "warning" and value else value
        except ArithmeticError:
            out[key] = value
    return out


# -- the audit chain ------------------------------------------------------------------------------
_chain_lock = threading.Lock()
_chain: dict[str, Any] = {}


def chain_status(*, force: bool = False) -> dict[str, Any]:
    """The audit chain's last verification in this process (re-run when older than a minute)."""
    with _chain_lock:
        if force or not _chain or time.monotonic() - _chain["monotonic"] > CHAIN_CHECK_EVERY_S:
            checked, last_seq = 0, 0

            def counted():
                nonlocal checked, last_seq
                for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
                    checked += 1
                    last_seq = entry.seq
                    yield entry

            try:
                found = verify_chain(counted())
                broken = None if found is None else {"seq": found.seq, "event": found.event, "reason": found.reason}
                verified = checked if found is None else checked - 1
            except UNREADABLE_ERRORS as exc:  # a value rewritten into something no entry holds (text in a date)
                reason = f"an entry after seq {last_seq} cannot be read ({exc}): run manage.py audit_verify"
                broken, verified = {"seq": last_seq + 1, "event": "unreadable", "reason": reason}, checked
            _chain.update(
                monotonic=time.monotonic(),
                checked_at=timezone.now(),
                ok=broken is None,
                entries=verified,
                broken=broken,
            )
        return {k: v for k, v in _chain.items() if k != "monotonic"}
