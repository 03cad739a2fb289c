"""REST door for the broker connection and the account."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from brokers import selectors
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
from ibkrgw.openapi import ERROR
from ibkrgw.web.fields import account_field
from ibkrgw.web.serializers import StrictQueryMixin


class AccountQueryInput(StrictQueryMixin, serializers.Serializer):
    account = account_field(
        required=False, default="", help_text="Defaults to IB_ACCOUNT or the first managed account."
    )


_ACCOUNT = [AccountQueryInput]


class HealthView(APIView):
    permission_classes = [AllowAny]  # load balancers and the healthcheck probe call it without a key

    @extend_schema(
        operation_id="health",
        description="The gateway's state for load balancers and operators. Without credentials the fields that "
        "identify the account, the gateway's address or the ledger's problems are left out.",
        responses={200: HealthOutput},
    )
    def get(self, request: Request) -> Response:
        health = selectors.health_get()
        if request.auth is None and not request.user.is_authenticated:
            health = selectors.health_public(health)
        return Response(health_payload(health))


class AccountSummaryView(APIView):
    @extend_schema(
        operation_id="account_summary",
        parameters=_ACCOUNT,
        responses={200: AccountSummaryOutput, 422: ERROR, 503: ERROR, 504: ERROR},
    )
    def get(self, request: Request) -> Response:
        query = AccountQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return Response(account_summary_payload(selectors.account_summary_get(account=query.validated_data["account"])))


class PositionListView(APIView):
    @extend_schema(
        operation_id="account_positions",
        parameters=_ACCOUNT,
        responses={200: PositionOutput(many=True), 422: ERROR, 503: ERROR, 504: ERROR},
    )
    def get(self, request: Request) -> Response:
        query = AccountQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return Response(positions_payload(selectors.position_list(account=query.validated_data["account"])))


class PnLView(APIView):
    @extend_schema(
        operation_id="account_pnl", parameters=_ACCOUNT, responses={200: PnLOutput, 422: ERROR, 503: ERROR, 504: ERROR}
    )
    def get(self, request: Request) -> Response:
        query = AccountQueryInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        return Response(pnl_payload(selectors.pnl_get(account=query.validated_data["account"])))
