"""MCP tools for the broker connection and the account: mirrors of `GET /api/v1/health/` and `/account/*`."""

from __future__ import annotations

from typing import Any

from brokers import selectors
from brokers.api import AccountQueryInput
from brokers.payloads import account_summary_payload, health_payload, pnl_payload, positions_payload
from ibkrgw.actors import Actor
from ibkrgw.web.mcp import NoInput, mcp_tool


@mcp_tool(title="Gateway health", input=NoInput)
def get_health(query: NoInput, actor: Actor) -> dict[str, Any]:
    """Gateway connection, accounts, trading mode, whether orders are enabled, the kill switch, database and
    reconciliation state. Mirrors GET /api/v1/health/."""
    return health_payload(selectors.health_get())


@mcp_tool(title="Account summary", input=AccountQueryInput)
def get_account_summary(query: AccountQueryInput, actor: Actor) -> dict[str, Any]:
    """Account values (net liquidation, cash, buying power, margins...). `account` defaults to IB_ACCOUNT or the
    first managed account. Mirrors GET /api/v1/account/summary/."""
    return account_summary_payload(selectors.account_summary_get(account=query.validated_data["account"]))


@mcp_tool(title="Positions", input=AccountQueryInput)
def list_positions(query: AccountQueryInput, actor: Actor) -> list[dict[str, Any]]:
    """Open positions with contract, quantity, average cost, market value and P&L. Mirrors
    GET /api/v1/account/positions/."""
    return positions_payload(selectors.position_list(account=query.validated_data["account"]))


@mcp_tool(title="Profit and loss", input=AccountQueryInput)
def get_pnl(query: AccountQueryInput, actor: Actor) -> dict[str, Any]:
    """Daily, unrealized and realized P&L of the account. Mirrors GET /api/v1/account/pnl/."""
    return pnl_payload(selectors.pnl_get(account=query.validated_data["account"]))


TOOLS = [get_health, get_account_summary, list_positions, get_pnl]
