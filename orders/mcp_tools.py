"""MCP tools for orders and fills, the order and trading-status resources, and the order prompt.

There is deliberately no tool to halt or resume trading or to change a setting: releasing the kill
switch is for an admin user only, and settings come from the environment of the operator.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db.models import Max, QuerySet
from rest_framework import serializers

from brokers import runtime
from ibkrgw.actors import Actor
from ibkrgw.errors import GatewayError, LedgerUnreadable
from ibkrgw.web.fields import StrictIntegerField, symbol_field
from ibkrgw.web.mcp import McpPrompt, McpResource, bounded_list, for_agents, list_schema, mcp_tool
from ibkrgw.web.serializers import StrictBodyMixin, StrictQueryMixin, positive_ledger_decimal
from orders import selectors, services
from orders.api import FillListQuery, OrderCreateInput, OrderListQuery
from orders.models import Fill, OrderEvent, TradingSwitchEvent
from orders.payloads import (
    FillOutput,
    OrderOutput,
    PreviewOutput,
    ledger_page,
    order_detail,
    order_output,
    preview_output,
    trading_switch_payload,
)
from orders.types import ACTIONS

TRADING_STATUS_URI = "ibkr://trading-status"
ORDER_URI = "ibkr://orders/{order_id}"
ORDER_URI_RE = re.compile(r"^ibkr://orders/([0-9a-fA-F-]{32,36})$")
MAX_OFFSET = 10**9  # far beyond any ledger; larger numbers would overflow the database's integers
ORDERS_DEFAULT_LIMIT = 20
FILLS_DEFAULT_LIMIT = 50
MAX_LIMIT = 200


# place_order/preview_order arguments: REST's fields, with descriptions written for a model.
OrderInput = for_agents(
    OrderCreateInput,
    help_texts={
        "symbol": "Ticker, e.g. AAPL. Required unless con_id is given.",
        "con_id": "IB contract id (from resolve_contract or get_option_chain); identifies the contract alone.",
        "right": "Options only: C (call) or P (put).",
        "expiry": "Options and futures: YYYYMMDD (or YYYYMM).",
        "strike": "Options only: the strike price.",
        "action": "BUY or SELL (SELL_SHORT/BUY_TO_COVER).",
        "quantity": 'How many shares or contracts (a count, not money), e.g. "10". Whole numbers for futures, '
        "options and bonds; stocks may take fractions where the broker allows them.",
        "order_type": "Which prices to give: MKT none; LMT limit_price; STP stop_price; STP_LMT stop_price and "
        "limit_price; MOC none (tif DAY); LOC limit_price (tif DAY); TRAIL trail_amount or trail_percent; "
        "TRAIL_LIMIT limit_price and trail_amount or trail_percent. A price not listed for the type is an error.",
        "limit_price": "Limit price per share/contract, in the contract's currency (LMT, STP_LMT, LOC, TRAIL_LIMIT).",
        "stop_price": "Stop trigger price per share/contract (STP, STP_LMT).",
        "trail_amount": "Trailing distance in price units (TRAIL, TRAIL_LIMIT).",
        "trail_percent": "Trailing distance in percent, below 100 (TRAIL, TRAIL_LIMIT).",
        "tif": "Time in force: DAY, GTC (until cancelled), IOC, FOK, OPG (at the open).",
        "outside_rth": "Allow filling outside regular trading hours.",
        "client_order_id": "Your idempotency key, unique per account: the same key with the same arguments "
        "returns the original order instead of placing a second one. Always give one.",
    },
)


class OrderIdInput(StrictQueryMixin, serializers.Serializer):
    order_id = serializers.UUIDField(help_text="The order's id (a UUID), as returned by place_order or list_orders.")


class ModifyInput(StrictQueryMixin, serializers.Serializer):
    order_id = serializers.UUIDField(help_text="The working order's id (a UUID).")
    quantity = positive_ledger_decimal(
        required=False, help_text="New total quantity (shares/contracts), not below what has already filled."
    )
    limit_price = positive_ledger_decimal(required=False, help_text="New limit price (orders that have one).")
    stop_price = positive_ledger_decimal(required=False, help_text="New stop price (orders that have one).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if not {"quantity", "limit_price", "stop_price"} & set(attrs):
            raise serializers.ValidationError({"non_field_errors": ["Give quantity, limit_price or stop_price."]})
        return attrs


def _bounded(limit_default: int) -> tuple[StrictIntegerField, StrictIntegerField]:
    limit = StrictIntegerField(
        required=False,
        default=limit_default,
        min_value=1,
        max_value=MAX_LIMIT,
        help_text=f"How many to return (default {limit_default}, at most {MAX_LIMIT}).",
    )
    offset = StrictIntegerField(
        required=False, default=0, min_value=0, max_value=MAX_OFFSET, help_text="How many to skip (see next_offset)."
    )
    return limit, offset


class OrderListInput(OrderListQuery):
    limit, offset = _bounded(ORDERS_DEFAULT_LIMIT)


class FillListInput(FillListQuery):
    limit, offset = _bounded(FILLS_DEFAULT_LIMIT)


def _page(queryset: QuerySet, query: serializers.Serializer, output: type[serializers.Serializer]) -> dict[str, Any]:
    limit, offset = query.validated_data["limit"], query.validated_data["offset"]
    items = ledger_page(queryset, output, start=offset, stop=offset + limit)
    return bounded_list(items, total=queryset.count(), offset=offset, limit=limit)


ORDER_SCHEMA = OrderOutput
PREVIEW_SCHEMA = PreviewOutput


@mcp_tool(title="Preview an order", input=OrderInput, output=PREVIEW_SCHEMA)
def preview_order(data: OrderInput, actor: Actor) -> dict[str, Any]:
    """A dry run of place_order with the same arguments; nothing is recorded or sent. Call it before place_order.

    `ok` is true only when no gate would block the order now; `blocks` lists every gate that would
    (kill switch, risk limits, price collar, tick size, a reused client_order_id...), each with the
    error code place_order would return; `would_be` is what placing it would do (simulated,
    pending_approval, submitted or refused; replayed when its client_order_id already placed this very
    order). Also the broker's what-if: commission, margin and
    equity impact, in the account's currency."""
    return preview_output(services.order_preview(request=data.to_request(), actor=actor))


@mcp_tool(title="Place an order", input=OrderInput, output=ORDER_SCHEMA, trade=True)
def place_order(data: OrderInput, actor: Actor) -> dict[str, Any]:
    """Place an order through every gate (validation, account mode, risk limits, kill switch, arming).

    With ORDERS_ENABLED=false (the default) the order is recorded as `simulated` and nothing reaches
    the broker; when approval is required it waits as `pending_approval` for an operator. Returns
    the order with its status. Give a client_order_id: retrying with the same id and arguments
    returns the original order instead of placing a second one. Subscribe to
    ibkr://orders/{id} to learn of fills."""
    return order_output(services.order_submit(request=data.to_request(), actor=actor).order)


@mcp_tool(title="Modify a working order", input=ModifyInput, output=ORDER_SCHEMA, trade=True, idempotent=True)
def modify_order(data: ModifyInput, actor: Actor) -> dict[str, Any]:
    """Change the quantity, limit price or stop price of a working order (submitted or partially filled).

    The new values pass the same checks as a new order (tick size, price collar, notional and
    quantity limits, kill switch), then the change is sent to the broker. Giving the values already
    in force changes nothing. Returns the order."""
    terms = {k: v for k, v in data.validated_data.items() if k != "order_id"}
    return order_output(services.order_modify(order_id=data.validated_data["order_id"], actor=actor, **terms))


@mcp_tool(title="Cancel an order", input=OrderIdInput, output=ORDER_SCHEMA, trade=True, idempotent=True)
def cancel_order(data: OrderIdInput, actor: Actor) -> dict[str, Any]:
    """Cancel an order: a working order is cancelled at the broker; an order still waiting for approval
    is withdrawn (never sent).

    Idempotent: an order already cancelled or being cancelled is returned unchanged, not an error.
    A filled, rejected, expired or simulated order cannot be cancelled (order_state_conflict).
    Returns the order; its status becomes `cancelled` once the broker confirms."""
    return order_output(services.order_cancel(order_id=data.validated_data["order_id"], actor=actor))


@mcp_tool(title="Get an order", input=OrderIdInput, output=ORDER_SCHEMA)
def get_order(data: OrderIdInput, actor: Actor) -> dict[str, Any]:
    """One order: its status, quantities, prices, every state change (`events`) and its fills.

    To wait for a change, subscribe to the resource ibkr://orders/{order_id} instead of polling."""
    return order_detail(data.validated_data["order_id"])


@mcp_tool(
    title="List orders", input=OrderListInput, output=list_schema(OrderOutput, description="Orders, newest first.")
)
def list_orders(query: OrderListInput, actor: Actor) -> dict[str, Any]:
    """Orders, newest first, filtered by status, symbol, account and creation time (since/until, UTC).

    Returns `count` (all matches), `results` (this page, 20 by default) and `next_offset`."""
    return _page(selectors.order_list(**query.filters()), query, OrderOutput)


@mcp_tool(title="List fills", input=FillListInput, output=list_schema(FillOutput, description="Fills, newest first."))
def list_fills(query: FillListInput, actor: Actor) -> dict[str, Any]:
    """Executions (fills), newest first, filtered by order_id, symbol, account and time (UTC).

    Each fill has quantity, price, time, commission and realized P&L. Returns `count`, `results`
    (this page, 50 by default) and `next_offset`."""
    return _page(selectors.fill_list(**query.filters()), query, FillOutput)


# -- resources -----------------------------------------------------------------------------------
def trading_status_broker() -> dict[str, bool]:
    """This process's broker connection, from memory (no query)."""
    worker = getattr(runtime.current(), "worker", None)
    connected = worker is not None and worker.state == "connected"
    return {"broker_connected": connected, "broker_ready": connected and worker.reconciled.is_set()}


def trading_status() -> dict[str, Any]:
    """What decides whether an order can be sent now; read-only (settings come from the operator)."""
    switch = selectors.trading_switch_latest()
    broker = trading_status_broker()
    halted = selectors.trading_halted()
    return {
        "trading_mode": settings.TRADING_MODE,
        "orders_enabled": settings.ORDERS_ENABLED,
        "trading_halted": halted,
        "kill_switch": trading_switch_payload(switch) if switch is not None else None,
        **broker,
        "orders_reach_broker": bool(settings.ORDERS_ENABLED and not halted and broker["broker_ready"]),
        "approval_required_for_mcp": "mcp" in settings.APPROVAL_REQUIRED_FOR,
        "risk_limits": {
            "max_order_quantity": settings.RISK_MAX_ORDER_QUANTITY,
            "max_order_notional": settings.RISK_MAX_ORDER_NOTIONAL,
            "price_collar_pct": settings.RISK_PRICE_COLLAR_PCT,
            "max_orders_per_minute": settings.RISK_MAX_ORDERS_PER_MINUTE,
            "duplicate_window_s": settings.RISK_DUPLICATE_WINDOW_S,
            "quote_stale_after_s": settings.QUOTE_STALE_AFTER_S,
        },
        "mcp_can_change_these": False,
    }


def order_resource(order_id: str) -> dict[str, Any]:
    return order_detail(order_id)


def resource_known(uri: str) -> bool:
    if uri == TRADING_STATUS_URI:
        return True
    match = ORDER_URI_RE.match(uri)
    if not match:
        return False
    try:
        selectors.order_get_or_error(order_id=match.group(1))
    except LedgerUnreadable:
        return True  # it is there: reading it answers why it cannot be read
    except GatewayError:
        return False
    return True


def _new_rows(state: dict[str, Any], name: str, queryset: QuerySet, *fields: str) -> list[tuple[Any, ...]]:
    """Rows (id, *fields) added since the last poll; the first poll only notes where the ledger is."""
    last = state.get(name)
    if last is None:
        state[name] = queryset.aggregate(m=Max("id"))["m"] or 0
        return []
    rows = list(queryset.filter(id__gt=last).order_by("id").values_list("id", *fields))
    if rows:
        state[name] = rows[-1][0]
    return rows


def _broker_state() -> tuple[bool, bool]:
    status = trading_status_broker()
    return status["broker_connected"], status["broker_ready"]


def resources_changed(state: dict[str, Any]) -> set[str]:
    """The resources that changed since the last call: each order with a new event or fill, and the trading
    status (a kill-switch row, or the broker connecting, disconnecting or becoming ready)."""
    changed = {ORDER_URI.format(order_id=row[1]) for row in _new_rows(state, "event", OrderEvent.objects, "order_id")}
    changed |= {ORDER_URI.format(order_id=row[1]) for row in _new_rows(state, "fill", Fill.objects, "order_id")}
    broker = _broker_state()
    if _new_rows(state, "switch", TradingSwitchEvent.objects) or state.get("broker", broker) != broker:
        changed.add(TRADING_STATUS_URI)
    state["broker"] = broker
    return changed


RESOURCES = [
    McpResource(
        uri=TRADING_STATUS_URI,
        name="trading-status",
        description="Trading mode, whether orders are enabled and reach the broker, the kill switch and the risk "
        "limits (JSON). Subscribe to be told when any of it changes (a halt, the broker connection).",
        read=trading_status,
    ),
    McpResource(
        uri=ORDER_URI,
        name="order",
        description="One order as get_order returns it (JSON). Subscribe to be told of every status change and "
        "fill, instead of polling.",
        read=order_resource,
    ),
]


# -- prompts -------------------------------------------------------------------------------------
class LimitOrderPromptInput(StrictBodyMixin, serializers.Serializer):
    """place_limit_order_safely's arguments, held to place_order's own rules before they become prompt text."""

    symbol = symbol_field()
    action = serializers.ChoiceField(choices=ACTIONS)
    quantity = positive_ledger_decimal()
    limit_price = positive_ledger_decimal()


def place_limit_order_safely(symbol: str, action: str, quantity: str, limit_price: str) -> str:
    return f"""Place a {action} limit order for {quantity} {symbol} at {limit_price}, safely:
1. Read ibkr://trading-status: trading mode, whether orders reach the broker, the kill switch and the
   risk limits. If trading is halted, stop and tell me.
2. get_quote for {symbol}: compare {limit_price} with bid/ask; tell me if it is far from the market.
3. preview_order with symbol={symbol}, action={action}, quantity={quantity}, order_type=LMT,
   limit_price={limit_price}, and a new client_order_id. If it reports an error, stop and explain it.
4. Show me the preview (commission, margin impact) and ask me to confirm.
5. Only after I confirm: place_order with exactly the same arguments and client_order_id. If the call
   fails or times out, retry with the same client_order_id (it will not place a second order).
6. Subscribe to ibkr://orders/<id> and tell me when it fills or changes status."""


PROMPTS = [
    McpPrompt(
        name="place_limit_order_safely",
        title="Place a limit order safely",
        description="Check status and quote, preview, ask for confirmation, then place with an idempotency key.",
        render=place_limit_order_safely,
        input=LimitOrderPromptInput,
        trade=True,
    )
]

TOOLS = [preview_order, place_order, modify_order, cancel_order, get_order, list_orders, list_fills]
