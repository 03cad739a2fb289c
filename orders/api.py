"""REST door for orders, fills and the kill switch: input serializer -> service -> output serializer."""

from __future__ import annotations

from decimal import Decimal

from django.http import QueryDict
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api import LedgerList
from ibkrgw.auth import HasReadScope, HasTradeScope, IsAdminUser, MayHalt, request_actor
from ibkrgw.openapi import ERROR
from ibkrgw.web.fields import (
    StrictIntegerField,
    account_field,
    currency_field,
    exchange_field,
    expiry_field,
    multiplier_field,
    pattern_field,
    symbol_field,
)
from ibkrgw.web.listing import ListQuery
from ibkrgw.web.serializers import FieldsOncePerThread, StrictBodyMixin, ledger_decimal, positive_ledger_decimal
from marketdata.api import SEC_TYPES
from orders import selectors, services
from orders.models import OrderStatus
from orders.payloads import (
    FillOutput,
    OrderOutput,
    PreviewOutput,
    TradingSwitchOutput,
    order_detail,
    order_output,
    preview_output,
    trading_switch_payload,
)
from orders.types import ACTIONS, ORDER_TYPES, TIFS, OrderRequest


class OrderCreateInput(FieldsOncePerThread, StrictBodyMixin, serializers.Serializer):
    client_order_id = pattern_field(
        r"^[A-Za-z0-9._:-]{1,64}$",
        "1 to 64 of letters, digits and . _ : - only.",
        required=False,
        default="",
        help_text="Your idempotency key, unique per account (same as the Idempotency-Key header).",
    )
    account = account_field(required=False, default="")
    symbol = symbol_field(required=False, default="")
    sec_type = serializers.ChoiceField(choices=SEC_TYPES, default="STK")
    exchange = exchange_field(required=False, default="")
    primary_exchange = exchange_field(required=False, default="")
    currency = currency_field(required=False, default="")
    expiry = expiry_field(required=False, default="")
    strike = ledger_decimal(required=False, allow_null=True, default=None, min_value=Decimal(0))
    right = serializers.ChoiceField(choices=["C", "P"], required=False, default="")
    multiplier = multiplier_field(required=False, default="")
    con_id = StrictIntegerField(required=False, allow_null=True, default=None, min_value=1, max_value=2**31 - 1)
    action = serializers.ChoiceField(choices=ACTIONS)
    quantity = positive_ledger_decimal()
    order_type = serializers.ChoiceField(choices=ORDER_TYPES)
    limit_price = ledger_decimal(required=False, allow_null=True, default=None)
    stop_price = ledger_decimal(required=False, allow_null=True, default=None)
    trail_amount = ledger_decimal(required=False, allow_null=True, default=None)
    trail_percent = ledger_decimal(required=False, allow_null=True, default=None)
    tif = serializers.ChoiceField(choices=TIFS, default="DAY")
    outside_rth = serializers.BooleanField(default=False)
    take_profit = ledger_decimal(
        required=False, allow_null=True, default=None, help_text="Bracket: a limit exit at this price (GTC)."
    )
    stop_loss = ledger_decimal(
        required=False, allow_null=True, default=None, help_text="Bracket: a stop exit at this price (GTC)."
    )

    def validate(self, attrs):
        if not attrs["symbol"] and not attrs["con_id"]:
            raise serializers.ValidationError({"symbol": ["Give a symbol or a con_id."]})
        attrs["symbol"] = attrs["symbol"].upper()
        attrs["sec_type"] = "STK" if attrs["sec_type"] == "ETF" else attrs["sec_type"]
        return attrs

    def to_request(self) -> OrderRequest:
        return OrderRequest(**self.validated_data)


class OrderModifyInput(StrictBodyMixin, serializers.Serializer):
    quantity = positive_ledger_decimal(required=False)
    limit_price = positive_ledger_decimal(required=False)
    stop_price = positive_ledger_decimal(required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError({"non_field_errors": ["Give quantity, limit_price or stop_price."]})
        return attrs


class OrderListQuery(ListQuery):
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)
    symbol = serializers.CharField(max_length=32, required=False)
    account = serializers.CharField(max_length=32, required=False)


class FillListQuery(ListQuery):
    order_id = serializers.UUIDField(required=False)
    symbol = serializers.CharField(max_length=32, required=False)
    account = serializers.CharField(max_length=32, required=False)


class TradingSwitchInput(StrictBodyMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)


def _without_csrf_token(data):
    """A form post (the browsable API) carries Django's CSRF token; it is not an order field."""
    if isinstance(data, QueryDict) and "csrfmiddlewaretoken" in data:
        data = data.copy()
        del data["csrfmiddlewaretoken"]
    return data


class RefusalsAudited:
    """Order-changing requests refused before any gate (malformed body, wrong state, no such order)
    leave a bounded audit entry; gate blocks already left theirs."""

    audited_actions: tuple[str, ...] = ()

    def handle_exception(self, exc):
        response = super().handle_exception(exc)  # type: ignore[misc]
        action = getattr(self, "action", None) or self.request.method.lower()
        if action in self.audited_actions:
            error = (response.data or {}).get("error", {}) if isinstance(response.data, dict) else {}
            try:
                body = self.request.data
            except Exception:  # the body itself was the problem
                body = None
            services.refusal_audit(
                exc,
                status=response.status_code,
                error=error,
                actor=request_actor(self.request),
                action=action,
                body=body,
            )
        return response


class OrderViewSet(RefusalsAudited, LedgerList, mixins.RetrieveModelMixin):
    serializer_class = OrderOutput
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"
    audited_actions = ("create", "partial_update", "cancel")

    def get_permissions(self):
        if self.action in ("create", "cancel", "partial_update"):
            return [HasTradeScope()]
        return [HasReadScope()]

    def get_serializer_class(self):
        # The browsable API's HTML forms: what each write accepts, not the order it answers with.
        method = getattr(self.request, "method", "GET")
        if method == "POST" and self.action in ("list", "create"):
            return OrderCreateInput
        if method in ("PATCH", "PUT") and self.action in ("retrieve", "partial_update"):
            return OrderModifyInput
        return super().get_serializer_class()

    def get_queryset(self):
        if self.action != "list":
            return selectors.order_queryset()
        query = OrderListQuery(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        return selectors.order_list(**query.filters())

    @extend_schema(
        parameters=[OrderListQuery],
        responses={200: OrderOutput(many=True), 400: ERROR, 409: ERROR},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_object(self):
        return selectors.order_get_or_error(order_id=self.kwargs["pk"])

    @extend_schema(responses={200: OrderOutput, 404: ERROR, 409: ERROR})
    def retrieve(self, request, *args, **kwargs):
        return Response(order_detail(self.kwargs["pk"]))

    @extend_schema(
        request=OrderCreateInput,
        parameters=[OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER, required=False)],
        responses={
            201: OrderOutput,
            200: OrderOutput,
            400: ERROR,
            403: ERROR,
            404: ERROR,
            409: ERROR,
            422: ERROR,
            423: ERROR,
            429: ERROR,
            503: ERROR,
            504: ERROR,
        },
        description="Place an order through every gate. With ORDERS_ENABLED=false it is recorded as `simulated` "
        "with a preview and nothing is sent. A repeated client_order_id with the same body answers "
        "200 with the original order.",
    )
    def create(self, request: Request) -> Response:
        data = OrderCreateInput(data=_without_csrf_token(request.data))
        data.is_valid(raise_exception=True)
        result = services.order_submit(
            request=data.to_request(),
            actor=request_actor(request),
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return Response(
            order_output(result.order), status=status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED
        )

    @extend_schema(
        request=OrderModifyInput,
        responses={200: OrderOutput, 400: ERROR, 404: ERROR, 409: ERROR, 422: ERROR, 503: ERROR},
    )
    def partial_update(self, request: Request, pk=None) -> Response:
        data = OrderModifyInput(data=request.data)
        data.is_valid(raise_exception=True)
        order = services.order_modify(order_id=pk, actor=request_actor(request), **data.validated_data)
        return Response(order_output(order))

    @extend_schema(request=None, responses={200: OrderOutput, 404: ERROR, 409: ERROR, 503: ERROR})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        order = services.order_cancel(order_id=pk, actor=request_actor(request))
        return Response(order_output(order))

    @extend_schema(
        request=OrderCreateInput,
        responses={200: PreviewOutput, 400: ERROR, 404: ERROR, 409: ERROR, 422: ERROR, 503: ERROR, 504: ERROR},
        description="A dry run of placing this order: every gate that would block it (with the code placing it "
        "would answer), and the broker's what-if (commission, margin and equity impact). Nothing is recorded or sent.",
    )
    @action(detail=False, methods=["post"], permission_classes=[HasReadScope])
    def preview(self, request: Request) -> Response:
        data = OrderCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.order_preview(
            request=data.to_request(),
            actor=request_actor(request),
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return Response(preview_output(result))


class FillViewSet(LedgerList):
    serializer_class = FillOutput

    def get_queryset(self):
        query = FillListQuery(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        return selectors.fill_list(**query.filters())

    @extend_schema(
        parameters=[FillListQuery],
        responses={200: FillOutput(many=True), 400: ERROR, 409: ERROR},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class TradingHaltView(RefusalsAudited, APIView):
    permission_classes = [MayHalt]
    audited_actions = ("post",)

    @extend_schema(
        operation_id="trading_halt",
        request=TradingSwitchInput,
        responses={200: TradingSwitchOutput, 401: ERROR, 403: ERROR},
        description="Kill switch: cancel every open order and block new ones.",
    )
    def post(self, request: Request) -> Response:
        data = TradingSwitchInput(data=request.data)
        data.is_valid(raise_exception=True)
        row = services.trading_halt(actor=request_actor(request), reason=data.validated_data["reason"])
        return Response(trading_switch_payload(row))


class TradingResumeView(RefusalsAudited, APIView):
    permission_classes = [IsAdminUser]
    audited_actions = ("post",)  # an attempt to release the kill switch without the right is on record

    @extend_schema(
        operation_id="trading_resume",
        request=TradingSwitchInput,
        responses={200: TradingSwitchOutput, 401: ERROR, 403: ERROR},
        description="Release the kill switch. Admin users only; never an API key or an agent.",
    )
    def post(self, request: Request) -> Response:
        data = TradingSwitchInput(data=request.data)
        data.is_valid(raise_exception=True)
        row = services.trading_resume(actor=request_actor(request), reason=data.validated_data["reason"])
        return Response(trading_switch_payload(row))
