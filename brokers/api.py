"""REST door for the broker connection and the account."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from brokers import selectors
from brokers.adapter import as_dict
from ibkrgw.openapi import ERROR
from marketdata.api import ContractOutput, StrictQueryMixin


class GatewayStateOutput(serializers.Serializer):
    state = serializers.CharField(help_text="not_started, connecting, connected, degraded, reconnecting, stopped")
    address = serializers.CharField()
    connected = serializers.BooleanField()
    server_version = serializers.IntegerField(allow_null=True)
    client_id = serializers.IntegerField(allow_null=True)
    accounts = serializers.ListField(child=serializers.CharField())
    connected_since = serializers.DateTimeField(allow_null=True)
    down_since = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    reconnects = serializers.IntegerField()
    down_reason = serializers.CharField(
        allow_blank=True,
        help_text="Why the gateway is down: refused (not running/restarting), login_pending (waiting for login or "
        "two-factor), client_id_in_use, connection_lost, gateway_lost_ib_servers; empty when connected.",
    )
    reconciled = serializers.BooleanField()
    owner = serializers.ChoiceField(
        choices=["this_process", "another_process"],
        help_text="With several web processes, whether this one holds the IB connection.",
    )
    lease_holder = serializers.CharField(
        required=False, allow_null=True, help_text="host:pid:id of the process holding the IB connection lease."
    )
    stale_subscriptions = serializers.ListField(child=serializers.CharField())


class DatabaseStateOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()
    vendor = serializers.CharField()


class HaltStateOutput(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["cancelling", "done"], help_text="done once the broker reports no working order"
    )
    working_orders = serializers.IntegerField(
        allow_null=True, help_text="orders the broker still reports as working (null: not checked yet)"
    )
    checked_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class HealthOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    gateway = GatewayStateOutput()
    simulated_gateway = serializers.BooleanField()
    trading_mode = serializers.ChoiceField(choices=["paper", "live"])
    orders_enabled = serializers.BooleanField()
    trading_halted = serializers.BooleanField(allow_null=True)
    halt = HaltStateOutput(allow_null=True, required=False, help_text="while halted: the global cancel's progress")
    reconciliation = serializers.ChoiceField(choices=["pending", "done"])
    database = DatabaseStateOutput()


class AccountQueryInput(StrictQueryMixin, serializers.Serializer):
    account = serializers.CharField(
        max_length=32, required=False, default="", help_text="Defaults to IB_ACCOUNT or the first managed account."
    )


class AccountValueOutput(serializers.Serializer):
    tag = serializers.CharField()
    value = serializers.CharField()
    currency = serializers.CharField(allow_blank=True)


class AccountSummaryOutput(serializers.Serializer):
    account = serializers.CharField()
    values = AccountValueOutput(many=True)


def _money():
    return serializers.DecimalField(max_digits=28, decimal_places=10, allow_null=True, normalize_output=True)


class PositionOutput(serializers.Serializer):
    account = serializers.CharField()
    contract = ContractOutput()
    quantity = _money()
    average_cost = _money()
    market_price = _money()
    market_value = _money()
    unrealized_pnl = _money()
    realized_pnl = _money()


class PnLOutput(serializers.Serializer):
    account = serializers.CharField()
    daily_pnl = _money()
    unrealized_pnl = _money()
    realized_pnl = _money()


_ACCOUNT = [AccountQueryInput]


class HealthView(APIView):
    permission_classes = [AllowAny]  # load balancers and the healthcheck probe call it without a key

    @extend_schema(operation_id="health", responses={200: HealthOutput})
    def get(self, request: Request) -> Response:
        return Response(HealthOutput(selectors.health_get()).data)


class AccountSummaryView(APIView):
    @extend_schema(
        operation_id="account_summary",
        parameters=_ACCOUNT,
        responses={200: AccountSummaryOutput, 422: ERROR, 503: ERROR, 504: ERROR},
    )
    def get(self, request: Request) -> Response:
        query = AccountQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        summary = selectors.account_summary_get(account=query.validated_data["account"])
        return Response(
            AccountSummaryOutput({"account": summary.account, "values": [as_dict(v) for v in summary.values]}).data
        )


class PositionListView(APIView):
    @extend_schema(
        operation_id="account_positions",
        parameters=_ACCOUNT,
        responses={200: PositionOutput(many=True), 422: ERROR, 503: ERROR, 504: ERROR},
    )
    def get(self, request: Request) -> Response:
        query = AccountQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        positions = selectors.position_list(account=query.validated_data["account"])
        rows = [{**as_dict(p), "contract": as_dict(p.contract)} for p in positions]
        return Response(PositionOutput(rows, many=True).data)


class PnLView(APIView):
    @extend_schema(
        operation_id="account_pnl", parameters=_ACCOUNT, responses={200: PnLOutput, 422: ERROR, 503: ERROR, 504: ERROR}
    )
    def get(self, request: Request) -> Response:
        query = AccountQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return Response(PnLOutput(as_dict(selectors.pnl_get(account=query.validated_data["account"]))).data)
