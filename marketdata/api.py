"""REST door for market data: contracts, quotes, bars. Thin: input -> service -> output."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from brokers.adapter import ContractSpec
from brokers.payloads import ContractOutput, contracts_payload
from ibkrgw.openapi import ERROR
from ibkrgw.web import fields
from ibkrgw.web.serializers import StrictQueryMixin
from marketdata import services
from marketdata.limits import check_historical_request
from marketdata.payloads import BarsOutput, QuoteOutput, bars_payload, quote_payload

SEC_TYPES = ["STK", "ETF", "OPT", "FUT", "FOP", "CASH", "IND", "CRYPTO", "BOND", "FUND", "CFD", "WAR"]
BAR_SIZES = [
    "1 secs",
    "5 secs",
    "10 secs",
    "15 secs",
    "30 secs",
    "1 min",
    "2 mins",
    "3 mins",
    "5 mins",
    "10 mins",
    "15 mins",
    "20 mins",
    "30 mins",
    "1 hour",
    "2 hours",
    "3 hours",
    "4 hours",
    "8 hours",
    "1 day",
    "1 week",
    "1 month",
]
WHAT_TO_SHOW = [
    "TRADES",
    "MIDPOINT",
    "BID",
    "ASK",
    "BID_ASK",
    "ADJUSTED_LAST",
    "HISTORICAL_VOLATILITY",
    "OPTION_IMPLIED_VOLATILITY",
]


class ContractQueryInput(StrictQueryMixin, serializers.Serializer):
    symbol = fields.symbol_field(required=False, default="")
    sec_type = serializers.ChoiceField(choices=SEC_TYPES, required=False, default="STK")
    exchange = fields.exchange_field(required=False, default="")
    currency = fields.currency_field(required=False, default="")
    primary_exchange = fields.exchange_field(required=False, default="")
    expiry = fields.expiry_field(required=False, default="", help_text="YYYYMM or YYYYMMDD (options, futures).")
    strike = fields.StrictDecimalField(
        max_digits=20, decimal_places=8, required=False, allow_null=True, default=None, min_value=0
    )
    right = serializers.ChoiceField(choices=["C", "P", "CALL", "PUT"], required=False, default="")
    multiplier = fields.multiplier_field(required=False, default="")
    con_id = fields.StrictIntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=2**31 - 1)

    def to_spec(self, symbol: str | None = None) -> ContractSpec:
        data = dict(self.validated_data)
        if symbol is not None:
            data["symbol"] = symbol
        data["sec_type"] = "STK" if data["sec_type"] == "ETF" else data["sec_type"]
        return ContractSpec(**{k: v for k, v in data.items() if k in ContractSpec.__slots__})


class QuoteQueryInput(ContractQueryInput):
    stream = serializers.BooleanField(
        required=False, default=False, help_text="Keep a streaming subscription so later calls are served from memory."
    )


class BarsQueryInput(ContractQueryInput):
    bar_size = serializers.ChoiceField(choices=BAR_SIZES, required=False, default="1 day")
    duration = fields.pattern_field(
        r"^[0-9]{1,5} [SDWMY]$",
        "A number and a unit, e.g. '3600 S', '5 D', '2 W', '1 M', '1 Y'.",
        required=False,
        default="1 M",
        help_text="e.g. '3600 S', '5 D', '2 W', '1 M', '1 Y'.",
    )
    what_to_show = serializers.ChoiceField(choices=WHAT_TO_SHOW, required=False, default="TRADES")
    use_rth = serializers.BooleanField(required=False, default=True)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        # IB's limits, answered here (historical_limit) instead of by the broker after a round trip.
        check_historical_request(bar_size=attrs["bar_size"], duration=attrs["duration"])
        return attrs


class QuotePathQuery(QuoteQueryInput):
    """Query parameters of quotes/{symbol}/: the symbol comes from the path."""

    symbol = None


class BarsPathQuery(BarsQueryInput):
    """Query parameters of bars/{symbol}/: the symbol comes from the path."""

    symbol = None


class ContractListView(APIView):
    @extend_schema(
        operation_id="contracts_resolve",
        parameters=[ContractQueryInput],
        responses={200: ContractOutput(many=True), 400: ERROR, 404: ERROR, 503: ERROR, 504: ERROR},
        description="Resolve a contract specification to every matching contract (with conId). Cached.",
    )
    def get(self, request: Request) -> Response:
        query = ContractQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        infos = services.contract_search(spec=query.to_spec())
        return Response(contracts_payload(infos))


class QuoteView(APIView):
    @extend_schema(
        operation_id="quotes_retrieve",
        parameters=[QuotePathQuery],
        responses={200: QuoteOutput, 400: ERROR, 404: ERROR, 409: ERROR, 503: ERROR, 504: ERROR},
        description="Snapshot quote for one contract (served from the streaming cache when subscribed).",
    )
    def get(self, request: Request, symbol: str) -> Response:
        symbol = fields.validate_symbol(symbol)
        query = QuotePathQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        stream = query.validated_data.pop("stream")
        contract, quote = services.quote_get(spec=query.to_spec(symbol), stream=stream)
        return Response(quote_payload(contract, quote))


class BarsView(APIView):
    @extend_schema(
        operation_id="bars_retrieve",
        parameters=[BarsPathQuery],
        responses={200: BarsOutput, 400: ERROR, 404: ERROR, 409: ERROR, 429: ERROR, 503: ERROR, 504: ERROR},
        description="Historical bars. Requests are paced to IB's limits; over the limit answers 429 with a retry time.",
    )
    def get(self, request: Request, symbol: str) -> Response:
        symbol = fields.validate_symbol(symbol)
        query = BarsPathQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        params = {k: query.validated_data.pop(k) for k in ("bar_size", "duration", "what_to_show", "use_rth")}
        contract, bars = services.bars_get(spec=query.to_spec(symbol), **params)
        return Response(bars_payload(contract, bars, params))
