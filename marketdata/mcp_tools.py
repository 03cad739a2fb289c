"""MCP tools for market data: contracts, quotes, bars, option chains and market hours."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from rest_framework import serializers

from brokers import runtime
from brokers.adapter import ContractInfo, ContractSpec, Quote, as_dict
from brokers.hours import market_state
from brokers.payloads import ContractOutput, contracts_payload
from ibkrgw.actors import Actor
from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.web import fields
from ibkrgw.web.mcp import bounded_list, for_agents, list_schema, mcp_tool, output_schema
from ibkrgw.web.serializers import StrictQueryMixin
from marketdata import services
from marketdata.api import BarsQueryInput, ContractQueryInput, QuoteQueryInput
from marketdata.payloads import BarsOutput, QuoteOutput, bars_payload, quote_payload

CONTRACTS_DEFAULT_LIMIT = 20
BARS_DEFAULT_LIMIT = 100
BARS_MAX_LIMIT = 5000
CHAIN_DEFAULT_EXPIRIES = 12
CHAIN_DEFAULT_STRIKES = 10
CHAIN_MAX_STRIKES = 40
CHAIN_QUOTE_THREADS = 8


SYMBOL = "Ticker, e.g. AAPL (EUR.USD for FX)."
SYMBOL_OR_CON_ID = "Ticker, e.g. AAPL. Required unless con_id is given."
RIGHT = "Options: C (call) or P (put)."
C_OR_P = {"right": ["C", "P"]}  # REST's order spelling, in every tool


class ContractInput(
    for_agents(ContractQueryInput, help_texts={"symbol": SYMBOL_OR_CON_ID, "right": RIGHT}, choices=C_OR_P)
):
    limit = fields.StrictIntegerField(
        required=False,
        default=CONTRACTS_DEFAULT_LIMIT,
        min_value=1,
        max_value=services.MAX_CANDIDATES * 4,
        help_text=f"How many contracts to return (default {CONTRACTS_DEFAULT_LIMIT}).",
    )


QuoteInput = for_agents(
    QuoteQueryInput,
    help_texts={
        "symbol": SYMBOL,
        "right": RIGHT,
        "stream": "Keep a streaming subscription so later calls for this contract answer at once from memory.",
    },
    required=["symbol"],
    choices=C_OR_P,
)


class BarsInput(
    for_agents(
        BarsQueryInput,
        help_texts={
            "symbol": SYMBOL,
            "right": RIGHT,
            "duration": "How far back: a number and S(econds), D(ays), W(eeks), M(onths) or Y(ears), e.g. '5 D'. "
            "IB limits it per bar size (1 min bars: at most 1 D; 1 day bars: any).",
            "use_rth": "Regular trading hours only (false: include extended hours).",
        },
        required=["symbol"],
        choices=C_OR_P,
    )
):
    limit = fields.StrictIntegerField(
        required=False,
        default=BARS_DEFAULT_LIMIT,
        min_value=1,
        max_value=BARS_MAX_LIMIT,
        help_text=f"At most this many bars, the most recent (default {BARS_DEFAULT_LIMIT}).",
    )


class OptionChainInput(StrictQueryMixin, serializers.Serializer):
    symbol = fields.symbol_field(help_text="The underlying's ticker, e.g. AAPL.")
    exchange = fields.exchange_field(required=False, default="", help_text="Default SMART.")
    currency = fields.currency_field(required=False, default="")
    right = serializers.ChoiceField(
        choices=["C", "P"],
        required=False,
        default="",
        help_text="With expiry: only calls (C) or puts (P); both if empty.",
    )
    expiry = fields.pattern_field(
        r"^[0-9]{8}$",
        "YYYYMMDD.",
        required=False,
        default="",
        help_text="YYYYMMDD, one of the expiries listed without it. Given: quotes for the strikes near the money.",
    )
    strikes = fields.StrictIntegerField(
        required=False,
        default=CHAIN_DEFAULT_STRIKES,
        min_value=1,
        max_value=CHAIN_MAX_STRIKES,
        help_text=f"With expiry: how many strikes nearest the underlying to quote (default {CHAIN_DEFAULT_STRIKES}).",
    )
    expiries = fields.StrictIntegerField(
        required=False,
        default=CHAIN_DEFAULT_EXPIRIES,
        min_value=1,
        max_value=200,
        help_text=f"Without expiry: how many of the nearest expiries to list (default {CHAIN_DEFAULT_EXPIRIES}).",
    )


HoursInput = for_agents(ContractQueryInput, help_texts={"symbol": SYMBOL_OR_CON_ID, "right": RIGHT}, choices=C_OR_P)


@mcp_tool(
    title="Resolve a contract",
    input=ContractInput,
    output=list_schema(ContractOutput, key="contracts", paged=False, description="Matching contracts."),
)
def resolve_contract(query: ContractInput, actor: Actor) -> dict[str, Any]:
    """Find contracts (with their IB con_id) matching a symbol and optional sec_type, exchange, currency,
    expiry, strike, right, multiplier. Futures without expiry resolve to the front month.

    Use it when a symbol is ambiguous; for options prefer get_option_chain. Returns `count` (all
    matches) and `contracts` (the first `limit`)."""
    limit = query.validated_data.pop("limit")
    infos = services.contract_search(spec=query.to_spec())
    page = bounded_list(
        contracts_payload(infos[:limit]),
        total=len(infos),
        offset=0,
        limit=limit,
        key="contracts",
    )
    page.pop("next_offset")
    return page


@mcp_tool(title="Get a quote", input=QuoteInput, output=QuoteOutput)
def get_quote(query: QuoteInput, actor: Actor) -> dict[str, Any]:
    """Current quote for one contract: bid, ask, last, sizes, volume, previous close, high, low, in the
    contract's currency, with `time` (UTC), `age_ms` and `delayed` (true for delayed data)."""
    stream = query.validated_data.pop("stream")
    contract, quote = services.quote_get(spec=query.to_spec(), stream=stream)
    return quote_payload(contract, quote)


BARS_SCHEMA = output_schema(BarsOutput)
BARS_SCHEMA["properties"]["count"] = {"type": "integer", "description": "Bars the broker returned in all."}
BARS_SCHEMA["properties"]["truncated"] = {
    "type": "boolean",
    "description": "True when only the most recent `limit` bars are in `bars`: raise `limit` for more.",
}


@mcp_tool(title="Historical bars", input=BarsInput, output=BARS_SCHEMA)
def get_bars(query: BarsInput, actor: Actor) -> dict[str, Any]:
    """Historical OHLCV bars for one contract, oldest first, times in UTC: bar_size (e.g. '1 min',
    '1 day') over duration (e.g. '5 D').

    Only the most recent `limit` bars are returned (100 by default; `count` says how many there
    were). Over IB's pacing limit it answers pacing_violation with a retry time."""
    limit = query.validated_data.pop("limit")
    params = {k: query.validated_data.pop(k) for k in ("bar_size", "duration", "what_to_show", "use_rth")}
    contract, bars = services.bars_get(spec=query.to_spec(), **params)
    return {**bars_payload(contract, bars[-limit:], params), "count": len(bars), "truncated": len(bars) > limit}


# -- option chains -------------------------------------------------------------------------------
class ChainQuoteOutput(serializers.Serializer):
    con_id = serializers.IntegerField()
    local_symbol = serializers.CharField()
    strike = serializers.DecimalField(max_digits=20, decimal_places=8, normalize_output=True)
    right = serializers.CharField()
    bid = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True, normalize_output=True)
    ask = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True, normalize_output=True)
    last = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True, normalize_output=True)
    volume = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True, normalize_output=True)
    implied_vol = serializers.DecimalField(
        max_digits=30,
        decimal_places=12,
        allow_null=True,
        normalize_output=True,
        help_text="Null unless the broker sent greeks.",
    )
    delta = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True, normalize_output=True)
    gamma = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True, normalize_output=True)
    vega = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True, normalize_output=True)
    theta = serializers.DecimalField(max_digits=30, decimal_places=12, allow_null=True, normalize_output=True)
    error = serializers.CharField(allow_blank=True, help_text="Why this contract has no quote, if it has none.")


class OptionChainOutput(serializers.Serializer):
    symbol = serializers.CharField()
    underlying_price = serializers.DecimalField(
        max_digits=24,
        decimal_places=10,
        allow_null=True,
        normalize_output=True,
        help_text="Last (or mid) of the underlying.",
    )
    multiplier = serializers.CharField()
    trading_class = serializers.CharField()
    expiries = serializers.ListField(child=serializers.CharField(), help_text="YYYYMMDD, nearest first (bounded).")
    expiry_count = serializers.IntegerField(help_text="How many expiries there are in all.")
    strikes = serializers.ListField(
        child=serializers.DecimalField(max_digits=20, decimal_places=8, normalize_output=True),
        help_text="Strikes of the chain (all expiries), or of `expiry` when given.",
    )
    expiry = serializers.CharField(allow_blank=True)
    quotes = ChainQuoteOutput(many=True, help_text="With expiry: quotes for the strikes nearest the money.")


def _reference_price(quote: Quote) -> Decimal | None:
    if quote.last is not None:
        return quote.last
    if quote.bid is not None and quote.ask is not None:
        return (quote.bid + quote.ask) / 2
    return quote.close


def _chain_quote(adapter: Any, contract: ContractInfo) -> dict[str, Any]:
    fields = ("bid", "ask", "last", "volume", "implied_vol", "delta", "gamma", "vega", "theta")
    row = {"con_id": contract.con_id, "local_symbol": contract.local_symbol, "strike": contract.strike}
    row.update(right=contract.right, error="", **dict.fromkeys(fields))
    try:
        quote = adapter.quote_snapshot(contract=contract)
    except GatewayError as exc:  # one contract without a quote does not spoil the chain
        return {**row, "error": f"{exc.code}: {exc.message}"}
    return {**row, **{name: getattr(quote, name) for name in fields}}


def option_chain(*, spec: ContractSpec, expiry: str, right: str, strikes: int, expiries: int) -> dict[str, Any]:
    """Expiries and strikes of the options on `spec.symbol`; with `expiry`, quotes near the money."""
    underlying, quote = services.quote_get(spec=replace(spec, sec_type="STK", expiry="", right=""))
    reference = _reference_price(quote)
    options = services.contract_resolve(
        spec=replace(spec, sec_type="OPT", expiry=expiry, right=right, exchange=spec.exchange or "SMART")
    )
    all_expiries = sorted({o.expiry for o in options})
    strike_list = sorted({o.strike for o in options if o.strike is not None})
    payload: dict[str, Any] = {
        "symbol": underlying.symbol,
        "underlying_price": reference,
        "multiplier": options[0].multiplier,
        "trading_class": options[0].trading_class,
        "expiries": all_expiries[:expiries],
        "expiry_count": len(all_expiries),
        "strikes": strike_list,
        "expiry": expiry,
        "quotes": [],
    }
    if not expiry:
        return payload
    near = sorted(strike_list, key=lambda s: (abs(s - reference) if reference is not None else 0, s))[:strikes]
    chosen = sorted((o for o in options if o.strike in near), key=lambda o: (o.strike, o.right))
    adapter = runtime.adapter()
    # Snapshots one after the other would take (strikes x rights) round trips; the broker answers them in parallel.
    with ThreadPoolExecutor(CHAIN_QUOTE_THREADS) as pool:
        payload["quotes"] = list(pool.map(lambda c: _chain_quote(adapter, c), chosen))
    payload["strikes"] = sorted(near)
    return payload


@mcp_tool(title="Option chain", input=OptionChainInput, output=OptionChainOutput)
def get_option_chain(query: OptionChainInput, actor: Actor) -> dict[str, Any]:
    """Options on a stock or ETF, in two steps. Without `expiry`: the expiries (nearest first) and strikes
    available, with the underlying price. With `expiry` (YYYYMMDD): quotes (bid, ask, last, volume,
    and greeks when the broker sends them) for calls and puts at the `strikes` strikes nearest the
    underlying price, each with the con_id to pass to place_order."""
    data = dict(query.validated_data)
    spec = ContractSpec(symbol=data.pop("symbol"), exchange=data.pop("exchange"), currency=data.pop("currency"))
    return OptionChainOutput(option_chain(spec=spec, **data)).data


# -- market hours --------------------------------------------------------------------------------
class MarketHoursOutput(serializers.Serializer):
    contract = ContractOutput()
    now = serializers.DateTimeField()
    calendar = serializers.CharField(allow_null=True, help_text="The exchange calendar used; null when unknown.")
    open_now = serializers.BooleanField(allow_null=True, help_text="Regular session open now; null when unknown.")
    session_open = serializers.DateTimeField(allow_null=True, help_text="Open of the session in force or next (UTC).")
    session_close = serializers.DateTimeField(allow_null=True, help_text="Close of that session (UTC).")
    time_zone = serializers.CharField(help_text="The exchange's time zone, as the broker reports it.")
    trading_hours = serializers.CharField(help_text="The broker's trading hours string (exchange time zone).")
    liquid_hours = serializers.CharField(help_text="The broker's regular (liquid) hours string.")
    hours_checked_by_gateway = serializers.BooleanField(
        help_text="False when the gateway does not refuse orders outside hours (TRADING_HOURS=always)."
    )


def market_hours(*, spec: Any) -> dict[str, Any]:
    contract = services.contract_resolve_one(spec=spec)
    now = datetime.now(UTC)
    state = market_state(contract, now)
    return {
        "contract": as_dict(contract),
        "now": now,
        "calendar": state.calendar if state else None,
        "open_now": state.open_now if state else None,
        "session_open": state.session_open if state else None,
        "session_close": state.session_close if state else None,
        "time_zone": contract.time_zone,
        "trading_hours": contract.trading_hours,
        "liquid_hours": contract.liquid_hours,
        "hours_checked_by_gateway": settings.TRADING_HOURS == "exchange",
    }


@mcp_tool(title="Market hours", input=HoursInput, output=MarketHoursOutput)
def get_market_hours(query: HoursInput, actor: Actor) -> dict[str, Any]:
    """Is the market for a contract open now, and when does its session open and close (UTC)? Also
    the broker's own trading-hours strings, and whether the gateway refuses orders outside hours."""
    if not query.validated_data["symbol"] and not query.validated_data["con_id"]:
        raise GatewayError(ErrorCode.INVALID_REQUEST, "Give a symbol or a con_id.", details={"fields": ["symbol"]})
    return MarketHoursOutput(market_hours(spec=query.to_spec())).data


TOOLS = [resolve_contract, get_quote, get_bars, get_option_chain, get_market_hours]
