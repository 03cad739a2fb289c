"""MCP tools for orders and fills (mirrors of `/api/v1/orders/...` and `/fills/`), and the trading-status resource.

There is deliberately no tool to halt or resume trading or to change a setting: releasing the kill
switch is for an admin user only, and settings come from the environment of the operator.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from ibkrgw.actors import Actor
from ibkrgw.web.listing import page
from ibkrgw.web.mcp import McpResource, mcp_tool
from ibkrgw.web.serializers import StrictQueryMixin
from orders import selectors, services
from orders.api import FillListQuery, OrderCreateInput, OrderListQuery
from orders.payloads import (
    FillOutput,
    OrderOutput,
    order_output,
    order_payload,
    preview_output,
    trading_switch_payload,
)


class OrderIdInput(StrictQueryMixin, serializers.Serializer):
    """The `{id}` of `/api/v1/orders/{id}/`, as an argument."""

    order_id = serializers.UUIDField(help_text="The order's id (a UUID), as returned by place_order or list_orders.")


@mcp_tool(title="Preview an order", input=OrderCreateInput)
def preview_order(data: OrderCreateInput, actor: Actor) -> dict[str, Any]:
    """A dry run of place_order with the same arguments: `ok` is true only when no gate would block it now;
    `blocks` lists every gate that would (kill switch, risk limits, price collar, idempotency...) with the error
    code place_order would return; plus the broker's what-if (commission, margin and equity impact). Nothing is
    recorded or sent."""
    return preview_output(services.order_preview(request=data.to_request(), actor=actor))


@mcp_tool(title="Place an order", input=OrderCreateInput, trade=True)
def place_order(data: OrderCreateInput, actor: Actor) -> dict[str, Any]:
    """Place an order through every gate (validation, account mode, risk, kill switch, arming). With
    ORDERS_ENABLED=false (the default) it is recorded as `simulated` with a preview and nothing reaches the broker.
    Give a client_order_id: the same id with the same arguments replays the original order instead of placing a
    second one. Mirrors POST /api/v1/orders/."""
    return order_output(services.order_submit(request=data.to_request(), actor=actor).order)


@mcp_tool(title="Cancel an order", input=OrderIdInput, trade=True, idempotent=True)
def cancel_order(data: OrderIdInput, actor: Actor) -> dict[str, Any]:
    """Ask the broker to cancel a working order (cancelling one already cancelling changes nothing). Mirrors
    POST /api/v1/orders/{id}/cancel/."""
    return order_output(services.order_cancel(order_id=data.validated_data["order_id"], actor=actor))


@mcp_tool(title="Get an order", input=OrderIdInput)
def get_order(data: OrderIdInput, actor: Actor) -> dict[str, Any]:
    """One order with its status, events (every state change) and fills. Mirrors GET /api/v1/orders/{id}/."""
    return order_payload(selectors.order_get_or_error(order_id=data.validated_data["order_id"]))


@mcp_tool(title="List orders", input=OrderListQuery)
def list_orders(query: OrderListQuery, actor: Actor) -> dict[str, Any]:
    """Orders, newest first, filtered by status, symbol, account and created time (since/until); paged with
    limit/offset. Mirrors GET /api/v1/orders/."""
    return page(selectors.order_list(**query.filters()), query, OrderOutput)


@mcp_tool(title="List fills", input=FillListQuery)
def list_fills(query: FillListQuery, actor: Actor) -> dict[str, Any]:
    """Executions, newest first, filtered by order_id, symbol, account and time; paged with limit/offset. Mirrors
    GET /api/v1/fills/."""
    return page(selectors.fill_list(**query.filters()), query, FillOutput)


def trading_status() -> dict[str, Any]:
    """What decides whether an order can be sent; read-only (settings come from the operator's environment)."""
    switch = selectors.trading_switch_latest()
    return {
        "trading_mode": settings.TRADING_MODE,
        "orders_enabled": settings.ORDERS_ENABLED,
        "trading_halted": selectors.trading_halted(),
        "kill_switch": trading_switch_payload(switch) if switch is not None else None,
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


TOOLS = [preview_order, place_order, cancel_order, get_order, list_orders, list_fills]
RESOURCES = [
    McpResource(
        uri="ibkr://trading-status",
        name="trading-status",
        description="Trading mode, whether orders are enabled, the kill switch and the risk limits (JSON).",
        read=trading_status,
    )
]
