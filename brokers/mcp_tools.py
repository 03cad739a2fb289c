"""MCP tools for the broker connection and the account (health, summary, positions, P&L), and the position prompt."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from brokers import selectors
from brokers.api import AccountQueryInput
from brokers.payloads import (
    AccountSummaryOutput,
    HealthOutput,
    PnLOutput,
    PositionOutput,
    account_summary_payload,
    health_payload,
    pnl_payload,
    positions_payload,
)
from ibkrgw.actors import Actor
from ibkrgw.web import fields
from ibkrgw.web.mcp import McpPrompt, NoInput, bounded_list, list_schema, mcp_tool
from ibkrgw.web.serializers import StrictBodyMixin

POSITIONS_DEFAULT_LIMIT = 50
POSITIONS_MAX_LIMIT = 500


class PositionsInput(AccountQueryInput):
    symbol = fields.symbol_field(required=False, default="", help_text="Only positions in this symbol (e.g. AAPL).")
    limit = fields.StrictIntegerField(
        required=False,
        default=POSITIONS_DEFAULT_LIMIT,
        min_value=1,
        max_value=POSITIONS_MAX_LIMIT,
        help_text=f"How many positions to return (default {POSITIONS_DEFAULT_LIMIT}).",
    )


@mcp_tool(title="Gateway health", input=NoInput, output=HealthOutput)
def get_health(query: NoInput, actor: Actor) -> dict[str, Any]:
    """Is the gateway usable? Broker connection state (and why it is down), accounts, trading mode,
    whether orders are enabled, the kill switch, database and reconciliation state.

    Call it first when other tools answer broker_unavailable."""
    return health_payload(selectors.health_get())


@mcp_tool(title="Account summary", input=AccountQueryInput, output=AccountSummaryOutput)
def get_account_summary(query: AccountQueryInput, actor: Actor) -> dict[str, Any]:
    """Account values as IB reports them: net liquidation, cash, buying power, margins... Each value
    has a tag, a value (a decimal string) and a currency. `account` defaults to the configured or
    first managed account."""
    return account_summary_payload(selectors.account_summary_get(account=query.validated_data["account"]))


@mcp_tool(
    title="Positions",
    input=PositionsInput,
    output=list_schema(PositionOutput, key="positions", paged=False, description="Open positions."),
)
def list_positions(query: PositionsInput, actor: Actor) -> dict[str, Any]:
    """Open positions: contract, quantity (negative when short), average cost, market price and value,
    unrealized and realized P&L, in the contract's currency. Returns `count` and `positions`."""
    symbol = query.validated_data["symbol"].strip().upper()
    positions = [
        p
        for p in selectors.position_list(account=query.validated_data["account"])
        if not symbol or p.contract.symbol == symbol
    ]
    limit = query.validated_data["limit"]
    rows = positions_payload(positions[:limit])
    page = bounded_list(rows, total=len(positions), offset=0, limit=limit, key="positions")
    page.pop("next_offset")
    return page


@mcp_tool(title="Profit and loss", input=AccountQueryInput, output=PnLOutput)
def get_pnl(query: AccountQueryInput, actor: Actor) -> dict[str, Any]:
    """Daily, unrealized and realized P&L of the account, in its base currency."""
    return pnl_payload(selectors.pnl_get(account=query.validated_data["account"]))


class PositionPromptInput(StrictBodyMixin, serializers.Serializer):
    """check_position's argument, held to the tools' symbol rules before it becomes prompt text."""

    symbol = fields.symbol_field()


def check_position(symbol: str) -> str:
    return f"""Check my position in {symbol}:
1. list_positions with symbol={symbol}: quantity, average cost, market value, unrealized P&L.
2. get_quote for {symbol}: the current bid/ask/last, and how old the quote is.
3. list_orders with symbol={symbol} and status=submitted (then partially_filled): working orders
   that would change the position.
4. Summarise: size, cost basis, P&L in money and percent, and any working orders. Do not place,
   modify or cancel anything."""


PROMPTS = [
    McpPrompt(
        name="check_position",
        title="Check a position",
        description="Position, quote and working orders for one symbol, summarised; changes nothing.",
        render=check_position,
        input=PositionPromptInput,
    )
]

TOOLS = [get_health, get_account_summary, list_positions, get_pnl]
