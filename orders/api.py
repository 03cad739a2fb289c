"""REST door for orders, fills and the kill switch: input serializer -> service -> output serializer."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import models
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ibkrgw.auth import HasReadScope, HasTradeScope, IsAdminUser, request_actor
from ibkrgw.openapi import ERROR
from ibkrgw.render import decimal_str
from marketdata.api import SEC_TYPES, ContractOutput, StrictQueryMixin
from orders import selectors, services
from orders.models import Fill, Order, OrderEvent, OrderStatus
from orders.types import ACTIONS, ORDER_TYPES, TIFS, OrderRequest

logger = logging.getLogger(__name__)


class NormalizedDecimalField(serializers.DecimalField):
    """Decimals as plain strings without padding: "10", "419.56", "0" (never "10.00000000" or "0E-8")."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("normalize_output", True)
        super().__init__(*args, **kwargs)


class LedgerSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DecimalField: NormalizedDecimalField,
    }


def _decimal(**kwargs):
    return serializers.DecimalField(max_digits=20, decimal_places=8, **kwargs)


class StrictBodyMixin:
    """Unknown fields are an error (a typo must never silently change an order)."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = set(data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return super().to_internal_value(data)


class OrderCreateInput(StrictBodyMixin, serializers.Serializer):
    client_order_id = serializers.RegexField(
        r"^[A-Za-z0-9._:-]{1,64}$",
        required=False,
        default="",
        help_text="Your idempotency key, unique per account (same as the Idempotency-Key header).",
    )
    account = serializers.CharField(max_length=32, required=False, default="")
    symbol = serializers.CharField(max_length=32, required=False, default="")
    sec_type = serializers.ChoiceField(choices=SEC_TYPES, default="STK")
    exchange = serializers.CharField(max_length=16, required=False, default="")
    primary_exchange = serializers.CharField(max_length=16, required=False, default="")
    currency = serializers.CharField(max_length=8, required=False, default="")
    expiry = serializers.RegexField(r"^\d{6}(\d{2})?$", required=False, default="")
    strike = _decimal(required=False, allow_null=True, default=None, min_value=Decimal(0))
    right = serializers.ChoiceField(choices=["C", "P"], required=False, default="")
    multiplier = serializers.RegexField(r"^\d+(\.\d+)?$", required=False, default="")
    con_id = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    action = serializers.ChoiceField(choices=ACTIONS)
    quantity = _decimal(min_value=Decimal("0.00000001"))
    order_type = serializers.ChoiceField(choices=ORDER_TYPES)
    limit_price = _decimal(required=False, allow_null=True, default=None)
    stop_price = _decimal(required=False, allow_null=True, default=None)
    trail_amount = _decimal(required=False, allow_null=True, default=None)
    trail_percent = _decimal(required=False, allow_null=True, default=None)
    tif = serializers.ChoiceField(choices=TIFS, default="DAY")
    outside_rth = serializers.BooleanField(default=False)
    take_profit = _decimal(
        required=False, allow_null=True, default=None, help_text="Bracket: a limit exit at this price (GTC)."
    )
    stop_loss = _decimal(
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
    quantity = _decimal(required=False, min_value=Decimal("0.00000001"))
    limit_price = _decimal(required=False, min_value=Decimal("0.00000001"))
    stop_price = _decimal(required=False, min_value=Decimal("0.00000001"))

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError({"non_field_errors": ["Give quantity, limit_price or stop_price."]})
        return attrs


class OrderEventOutput(LedgerSerializer):
    class Meta:
        model = OrderEvent
        fields = [
            "id",
            "status",
            "broker_order_id",
            "perm_id",
            "filled_quantity",
            "remaining_quantity",
            "average_fill_price",
            "reason",
            "code",
            "data",
            "source",
            "at",
        ]


class FillOutput(LedgerSerializer):
    order_id = serializers.UUIDField(allow_null=True)
    commission = serializers.SerializerMethodField()
    commission_currency = serializers.SerializerMethodField()
    realized_pnl = serializers.SerializerMethodField()

    class Meta:
        model = Fill
        fields = [
            "id",
            "exec_id",
            "order_id",
            "account",
            "con_id",
            "symbol",
            "side",
            "quantity",
            "price",
            "executed_at",
            "exchange",
            "broker_order_id",
            "perm_id",
            "order_ref",
            "commission",
            "commission_currency",
            "realized_pnl",
            "created_at",
        ]

    def _commission(self, fill):
        return getattr(fill, "commission", None) if hasattr(fill, "commission") else None

    def get_commission(self, fill) -> str | None:
        c = _commission_of(fill)
        return None if c is None else decimal_str(c.commission)

    def get_commission_currency(self, fill) -> str | None:
        c = _commission_of(fill)
        return None if c is None else c.currency

    def get_realized_pnl(self, fill) -> str | None:
        c = _commission_of(fill)
        return None if c is None else decimal_str(c.realized_pnl)


def _commission_of(fill):
    try:
        return fill.commission
    except Fill.commission.RelatedObjectDoesNotExist:
        return None


class OrderOutput(LedgerSerializer):
    status = serializers.SerializerMethodField()
    broker_order_id = serializers.SerializerMethodField()
    filled_quantity = serializers.SerializerMethodField()
    remaining_quantity = serializers.SerializerMethodField()
    average_fill_price = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()
    fills = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "id",
            "client_order_id",
            "status",
            "account",
            "symbol",
            "sec_type",
            "exchange",
            "primary_exchange",
            "currency",
            "con_id",
            "expiry",
            "strike",
            "right",
            "multiplier",
            "local_symbol",
            "action",
            "quantity",
            "order_type",
            "limit_price",
            "stop_price",
            "trail_amount",
            "trail_percent",
            "tif",
            "outside_rth",
            "trading_mode",
            "broker_order_id",
            "filled_quantity",
            "remaining_quantity",
            "average_fill_price",
            "preview",
            "actor_kind",
            "actor_label",
            "source",
            "correlation_id",
            "created_at",
            "parent",
            "role",
            "oca_group",
            "children",
            "events",
            "fills",
        ]

    def _events(self, order) -> list[OrderEvent]:
        cache = getattr(order, "_events_cache", None)
        if cache is None:
            cache = sorted(order.events.all(), key=lambda e: e.id)
            order._events_cache = cache
        return cache

    def _latest(self, order) -> OrderEvent | None:
        events = self._events(order)
        return events[-1] if events else None

    def get_status(self, order) -> str:
        latest = self._latest(order)
        return latest.status if latest else OrderStatus.PENDING_SUBMIT

    def get_broker_order_id(self, order) -> int | None:
        ids = [e.broker_order_id for e in self._events(order) if e.broker_order_id is not None]
        return ids[-1] if ids else None

    def get_filled_quantity(self, order) -> str:
        latest = self._latest(order)
        return decimal_str(latest.filled_quantity if latest else Decimal(0))

    def get_remaining_quantity(self, order) -> str | None:
        latest = self._latest(order)
        return None if latest is None else decimal_str(latest.remaining_quantity)

    def get_average_fill_price(self, order) -> str | None:
        latest = self._latest(order)
        return None if latest is None else decimal_str(latest.average_fill_price)

    def get_events(self, order) -> list[dict]:
        return OrderEventOutput(self._events(order), many=True).data

    def get_children(self, order) -> list[dict]:
        """A bracket entry's exits: id, client_order_id, role and current status."""
        return [
            {
                "id": str(child.pk),
                "client_order_id": child.client_order_id,
                "role": child.role,
                "status": (child.events.order_by("-id").values_list("status", flat=True).first() or ""),
            }
            for child in order.children.order_by("role")
        ]

    def get_fills(self, order) -> list[dict]:
        return FillOutput(sorted(order.fills.all(), key=lambda f: f.id), many=True).data


class GateBlockOutput(serializers.Serializer):
    gate = serializers.CharField(help_text="validation, account_mode, risk, idempotency or arming")
    code = serializers.CharField(help_text="the error code placing this order would answer")
    http_status = serializers.IntegerField()
    message = serializers.CharField()
    details = serializers.DictField()


class PreviewOutput(serializers.Serializer):
    ok = serializers.BooleanField(help_text="true when no gate would block this order now")
    would_be = serializers.ChoiceField(
        choices=["simulated", "pending_approval", "submitted", "refused"],
        help_text="what placing it now would do",
    )
    blocks = GateBlockOutput(many=True, help_text="every gate that would block, in gate order")
    account = serializers.CharField()
    contract = ContractOutput(allow_null=True)
    what_if_error = serializers.CharField(allow_blank=True, help_text="why the broker's what-if is missing, if it is")
    commission = _decimal(allow_null=True)
    min_commission = _decimal(allow_null=True)
    max_commission = _decimal(allow_null=True)
    commission_currency = serializers.CharField()
    init_margin_change = _decimal(allow_null=True)
    maint_margin_change = _decimal(allow_null=True)
    equity_with_loan_change = _decimal(allow_null=True)
    init_margin_after = _decimal(allow_null=True)
    maint_margin_after = _decimal(allow_null=True)
    equity_with_loan_after = _decimal(allow_null=True)
    warning = serializers.CharField(allow_blank=True)


PREVIEW_FIELDS = (
    "commission",
    "min_commission",
    "max_commission",
    "commission_currency",
    "init_margin_change",
    "maint_margin_change",
    "equity_with_loan_change",
    "init_margin_after",
    "maint_margin_after",
    "equity_with_loan_after",
    "warning",
)


def preview_output(result: services.PreviewResult) -> dict:
    """The one JSON shape of a preview (REST and MCP): the gates' verdict and the broker's what-if."""
    what_if = result.preview
    payload = {name: getattr(what_if, name) if what_if else None for name in PREVIEW_FIELDS}
    payload["commission_currency"] = payload["commission_currency"] or ""
    payload["warning"] = payload["warning"] or ""
    contract = result.contract
    payload.update(
        ok=not result.blocks,
        would_be=result.would_be,
        blocks=result.blocks,
        account=result.account,
        contract={n: getattr(contract, n) for n in contract.__slots__} if contract else None,
        what_if_error=result.what_if_error,
    )
    return PreviewOutput(payload).data


class OrderListQuery(StrictQueryMixin, serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)
    symbol = serializers.CharField(max_length=32, required=False)
    account = serializers.CharField(max_length=32, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    offset = serializers.IntegerField(required=False, min_value=0)


class FillListQuery(StrictQueryMixin, serializers.Serializer):
    order_id = serializers.UUIDField(required=False)
    symbol = serializers.CharField(max_length=32, required=False)
    account = serializers.CharField(max_length=32, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    offset = serializers.IntegerField(required=False, min_value=0)


class TradingSwitchInput(StrictBodyMixin, serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)


class TradingSwitchOutput(serializers.Serializer):
    halted = serializers.BooleanField()
    reason = serializers.CharField()
    actor_label = serializers.CharField()
    at = serializers.DateTimeField()


def order_output(order: Order) -> dict:
    """The one JSON shape of an order, shared by every door."""
    return OrderOutput(selectors.order_get(order_id=order.pk)).data


class RefusalsAudited:
    """Order-changing requests refused before any gate (malformed body, wrong state, no such order)
    leave a bounded audit entry; gate blocks already left theirs."""

    audited_actions: tuple[str, ...] = ()

    def handle_exception(self, exc):
        response = super().handle_exception(exc)  # type: ignore[misc]
        action = getattr(self, "action", None) or self.request.method.lower()
        if (
            400 <= response.status_code < 500
            and response.status_code != 401
            and action in self.audited_actions
            and not getattr(exc, "audited", False)
        ):
            error = (response.data or {}).get("error", {}) if isinstance(response.data, dict) else {}
            try:
                body = self.request.data
            except Exception:  # the body itself was the problem
                body = None
            try:
                services.refusal_record(
                    code=str(error.get("code", "invalid_request")),
                    message=str(error.get("message", "")),
                    details=error.get("details"),
                    actor=request_actor(self.request),
                    action=action,
                    body=body,
                )
            except Exception:  # auditing a refusal must never turn it into a 500
                logger.exception("could not audit a refused order request")
        return response


class OrderViewSet(RefusalsAudited, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = OrderOutput
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"
    audited_actions = ("create", "partial_update", "cancel")

    def get_permissions(self):
        if self.action in ("create", "cancel", "partial_update"):
            return [HasTradeScope()]
        return [HasReadScope()]

    def get_queryset(self):
        if self.action != "list":
            return selectors.order_queryset()
        query = OrderListQuery(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        params = {k: v for k, v in query.validated_data.items() if k not in ("limit", "offset")}
        return selectors.order_list(**params)

    @extend_schema(
        parameters=[OrderListQuery],
        responses={200: OrderOutput(many=True), 400: ERROR},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_object(self):
        return selectors.order_get_or_error(order_id=self.kwargs["pk"])

    @extend_schema(responses={200: OrderOutput, 404: ERROR})
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

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
        data = OrderCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.order_submit(
            request=data.to_request(),
            actor=request_actor(request),
            idempotency_key=request.headers.get("Idempotency-Key") or None,
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
            idempotency_key=request.headers.get("Idempotency-Key") or None,
        )
        return Response(preview_output(result))


class FillViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = FillOutput

    def get_queryset(self):
        query = FillListQuery(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        return selectors.fill_list(**{k: v for k, v in query.validated_data.items() if k not in ("limit", "offset")})

    @extend_schema(
        parameters=[FillListQuery],
        responses={200: FillOutput(many=True), 400: ERROR},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class TradingHaltView(RefusalsAudited, APIView):
    permission_classes = [HasTradeScope]
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
        return Response(TradingSwitchOutput(row).data)


class TradingResumeView(APIView):
    permission_classes = [IsAdminUser]

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
        return Response(TradingSwitchOutput(row).data)
