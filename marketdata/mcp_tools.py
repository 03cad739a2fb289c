"""MCP tools for market data: mirrors of `GET /api/v1/contracts/`, `/quotes/{symbol}/` and `/bars/{symbol}/`."""

from __future__ import annotations

from typing import Any

from brokers.payloads import contracts_payload
from ibkrgw.actors import Actor
from ibkrgw.web.mcp import mcp_tool
from marketdata import services
from marketdata.api import BarsQueryInput, ContractQueryInput, QuoteQueryInput
from marketdata.payloads import bars_payload, quote_payload


@mcp_tool(title="Resolve a contract", input=ContractQueryInput)
def resolve_contract(query: ContractQueryInput, actor: Actor) -> list[dict[str, Any]]:
    """Every contract (with conId) matching a symbol and optional sec_type, exchange, currency, expiry, strike,
    right, multiplier; futures without expiry resolve to the front month. Mirrors GET /api/v1/contracts/."""
    infos = services.contract_search(spec=query.to_spec())
    return contracts_payload(infos)


@mcp_tool(title="Get a quote", input=QuoteQueryInput)
def get_quote(query: QuoteQueryInput, actor: Actor) -> dict[str, Any]:
    """Snapshot quote for one contract: bid, ask, last, sizes, volume, close, time, age_ms, market_data_type.
    Mirrors GET /api/v1/quotes/{symbol}/ (`symbol` is an argument here)."""
    stream = query.validated_data.pop("stream")
    contract, quote = services.quote_get(spec=query.to_spec(), stream=stream)
    return quote_payload(contract, quote)


@mcp_tool(title="Historical bars", input=BarsQueryInput)
def get_bars(query: BarsQueryInput, actor: Actor) -> dict[str, Any]:
    """Historical bars for one contract (bar_size, duration, what_to_show, use_rth). Over IB's pacing limit it
    answers pacing_violation with a retry time. Mirrors GET /api/v1/bars/{symbol}/ (`symbol` is an argument)."""
    params = {k: query.validated_data.pop(k) for k in ("bar_size", "duration", "what_to_show", "use_rth")}
    contract, bars = services.bars_get(spec=query.to_spec(), **params)
    return bars_payload(contract, bars, params)


TOOLS = [resolve_contract, get_quote, get_bars]
