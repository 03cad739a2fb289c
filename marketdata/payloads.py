"""The JSON shapes of market data: quotes and bars for REST and MCP, the quote frame of `/ws/quotes/`.

Contracts render through `brokers.payloads`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from rest_framework import serializers

from brokers.adapter import Bar, ContractInfo, Quote, as_dict
from brokers.payloads import ContractOutput
from ibkrgw.web.render import decimal_str, iso_utc
from ibkrgw.web.serializers import price_field


class QuoteOutput(serializers.Serializer):
    symbol = serializers.CharField()
    con_id = serializers.IntegerField()
    bid = price_field()
    ask = price_field()
    last = price_field()
    bid_size = price_field()
    ask_size = price_field()
    last_size = price_field()
    volume = price_field()
    close = price_field()
    high = price_field()
    low = price_field()
    time = serializers.DateTimeField(allow_null=True)
    age_ms = serializers.IntegerField(allow_null=True, help_text="Milliseconds since the quote's time.")
    market_data_type = serializers.IntegerField(help_text="1 live, 2 frozen, 3 delayed, 4 delayed-frozen.")
    delayed = serializers.BooleanField()
    source = serializers.ChoiceField(choices=["snapshot", "stream"])
    contract = ContractOutput()


class BarOutput(serializers.Serializer):
    time = serializers.DateTimeField()
    open = price_field()
    high = price_field()
    low = price_field()
    close = price_field()
    volume = price_field()
    wap = price_field()
    count = serializers.IntegerField(allow_null=True)


class BarsOutput(serializers.Serializer):
    contract = ContractOutput()
    bar_size = serializers.CharField()
    duration = serializers.CharField()
    what_to_show = serializers.CharField()
    use_rth = serializers.BooleanField()
    bars = BarOutput(many=True)


def quote_record(contract: ContractInfo, quote: Quote) -> dict[str, Any]:
    """What QuoteOutput renders (the fast read lane renders it with one bound QuoteOutput)."""
    stamp = quote.time or quote.received_at
    return {
        **{name: getattr(quote, name) for name in QUOTE_FIELDS},
        "time": stamp,
        "age_ms": _age_ms(stamp),
        "delayed": quote.market_data_type in (3, 4),
        "source": "stream" if quote.received_at else "snapshot",
        "contract": as_dict(contract),
    }


def quote_payload(contract: ContractInfo, quote: Quote) -> dict[str, Any]:
    """A quote as REST and MCP show it."""
    return QuoteOutput(quote_record(contract, quote)).data


def bars_payload(contract: ContractInfo, bars: list[Bar], params: dict[str, Any]) -> dict[str, Any]:
    """Historical bars with the request's parameters (bar_size, duration, what_to_show, use_rth)."""
    return BarsOutput({**params, "contract": as_dict(contract), "bars": [as_dict(b) for b in bars]}).data


QUOTE_FIELDS = (
    "symbol",
    "con_id",
    "bid",
    "ask",
    "last",
    "bid_size",
    "ask_size",
    "last_size",
    "volume",
    "close",
    "high",
    "low",
    "market_data_type",
)


def _age_ms(stamp: datetime | None) -> int | None:
    """Milliseconds since the quote's time."""
    return int((datetime.now(UTC) - stamp).total_seconds() * 1000) if stamp else None


class QuoteFrame(TypedDict):
    type: str  # "quote"
    symbol: str
    con_id: int
    bid: str | None
    ask: str | None
    last: str | None
    bid_size: str | None
    ask_size: str | None
    volume: str | None
    time: str | None
    age_ms: int | None
    market_data_type: int
    stale: bool


def quote_frame(quote: Quote, *, stale: bool) -> QuoteFrame:
    """A quote as the `/ws/quotes/` stream sends it: lighter than REST: no contract, only what a ticker shows."""
    stamp = quote.time or quote.received_at
    return {
        "type": "quote",
        "symbol": quote.symbol,
        "con_id": quote.con_id,
        "bid": decimal_str(quote.bid),
        "ask": decimal_str(quote.ask),
        "last": decimal_str(quote.last),
        "bid_size": decimal_str(quote.bid_size),
        "ask_size": decimal_str(quote.ask_size),
        "volume": decimal_str(quote.volume),
        "time": iso_utc(stamp),
        "age_ms": _age_ms(stamp),
        "market_data_type": quote.market_data_type,
        "stale": stale,
    }
