"""The JSON shapes of orders, their events, fills, previews and the kill switch.

REST, MCP and the `/ws/orders/` stream render through these functions, so an order looks the same
through every door and the services never reach into a door to render one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.db import models
from django.db.models import QuerySet
from rest_framework import serializers

from audit.readable import UNREADABLE_ERRORS, unreadable_error
from audit.readable import ledger_page as readable_page
from brokers.adapter import as_dict
from brokers.payloads import ContractOutput
from ibkrgw.web.render import decimal_str
from ibkrgw.web.serializers import (
    DirectRepresentation,
    LedgerIntegerField,
    LedgerJSONField,
    NormalizedDecimalField,
    ledger_decimal,
    ledger_integer,
)
from orders import selectors
from orders.models import Fill, Order, OrderEvent, OrderStatus, TradingSwitchEvent

if TYPE_CHECKING:  # the services import this module (through publishing); only the type is needed here
    from orders.services import PreviewResult


class LedgerSerializer(DirectRepresentation, serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DecimalField: NormalizedDecimalField,
        models.JSONField: LedgerJSONField,
        **dict.fromkeys(
            (
                models.IntegerField,
                models.BigIntegerField,
                models.SmallIntegerField,
                models.PositiveIntegerField,
                models.PositiveBigIntegerField,
                models.PositiveSmallIntegerField,
            ),
            LedgerIntegerField,
        ),
    }


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


_bound: dict[type, serializers.Serializer] = {}


def bound(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    """One instance per output serializer, its fields built once: DRF builds a ModelSerializer's fields
    on every instantiation, which costs more than rendering the row. Rendering keeps no state on it."""
    instance = _bound.get(serializer_class)
    if instance is None:
        instance = _bound[serializer_class] = serializer_class()
        instance.fields  # noqa: B018 - build (and cache) the bound fields now, in one thread
    return instance


class OrderOutput(LedgerSerializer):
    status = serializers.SerializerMethodField()
    broker_order_id = serializers.SerializerMethodField()
    filled_quantity = serializers.SerializerMethodField()
    remaining_quantity = serializers.SerializerMethodField()
    average_fill_price = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()
    fills = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField()
    # The terms in force: a modification (PATCH, or one found at the broker) replaces the intent's;
    # each change stays in `events` (`data.modified`).
    quantity = serializers.SerializerMethodField()
    limit_price = serializers.SerializerMethodField()
    stop_price = serializers.SerializerMethodField()

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
        if order.recorded is not None:
            return order.recorded.events
        cache = getattr(order, "_events_cache", None)
        if cache is None:
            cache = sorted(order.events.all(), key=lambda e: e.id)
            order._events_cache = cache
        return cache

    def _latest(self, order) -> OrderEvent | None:
        events = self._events(order)
        return events[-1] if events else None

    def _terms(self, order) -> dict[str, str | None]:
        for event in reversed(self._events(order)):
            modified = (event.data or {}).get("modified")
            if modified:
                return modified
        return {}

    def _term(self, order, name: str) -> str | None:
        terms = self._terms(order)
        if name in terms:
            value = terms[name]
            return None if value is None else decimal_str(Decimal(value))
        return decimal_str(getattr(order, name))

    def get_quantity(self, order) -> str:
        return cast(str, self._term(order, "quantity"))  # never None: an order always has a quantity

    def get_limit_price(self, order) -> str | None:
        return self._term(order, "limit_price")

    def get_stop_price(self, order) -> str | None:
        return self._term(order, "stop_price")

    def get_status(self, order) -> str:
        latest = self._latest(order)
        return latest.status if latest else OrderStatus.PENDING_SUBMIT

    def get_broker_order_id(self, order) -> int | None:
        ids = [e.broker_order_id for e in self._events(order) if e.broker_order_id is not None]
        return ledger_integer(ids[-1]) if ids else None

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
        events = bound(OrderEventOutput)
        return [events.to_representation(event) for event in self._events(order)]

    def get_children(self, order) -> list[dict]:
        """A bracket entry's exits: id, client_order_id, role and current status."""
        if order.recorded is not None:
            children = sorted(order.recorded.children, key=lambda child: child.role)
            return [
                {"id": str(c.pk), "client_order_id": c.client_order_id, "role": c.role, "status": self.get_status(c)}
                for c in children
            ]
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
        fills = bound(FillOutput)
        if order.recorded is not None:
            return [fills.to_representation(fill) for fill in order.recorded.fills]
        return [fills.to_representation(fill) for fill in sorted(order.fills.all(), key=lambda f: f.id)]


class GateBlockOutput(serializers.Serializer):
    gate = serializers.CharField(help_text="validation, account_mode, risk, idempotency or arming")
    code = serializers.CharField(help_text="the error code placing this order would answer")
    http_status = serializers.IntegerField()
    message = serializers.CharField()
    details = serializers.DictField()


class PreviewOutput(serializers.Serializer):
    ok = serializers.BooleanField(help_text="true when no gate would block this order now")
    would_be = serializers.ChoiceField(
        choices=["simulated", "pending_approval", "submitted", "refused", "replayed"],
        help_text="what placing it now would do (replayed: this client_order_id already placed this very order; "
        "place answers with it and no gate runs)",
    )
    blocks = GateBlockOutput(many=True, help_text="every gate that would block, in gate order")
    account = serializers.CharField()
    contract = ContractOutput(allow_null=True)
    what_if_error = serializers.CharField(allow_blank=True, help_text="why the broker's what-if is missing, if it is")
    commission = ledger_decimal(allow_null=True)
    min_commission = ledger_decimal(allow_null=True)
    max_commission = ledger_decimal(allow_null=True)
    commission_currency = serializers.CharField()
    init_margin_change = ledger_decimal(allow_null=True)
    maint_margin_change = ledger_decimal(allow_null=True)
    equity_with_loan_change = ledger_decimal(allow_null=True)
    init_margin_after = ledger_decimal(allow_null=True)
    maint_margin_after = ledger_decimal(allow_null=True)
    equity_with_loan_after = ledger_decimal(allow_null=True)
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


class TradingSwitchOutput(serializers.Serializer):
    halted = serializers.BooleanField()
    reason = serializers.CharField()
    actor_label = serializers.CharField()
    at = serializers.DateTimeField()


def order_payload(order: Order) -> dict[str, Any]:
    """An order as read by `selectors.order_queryset()` (its status annotated, events and fills prefetched)."""
    return bound(OrderOutput).to_representation(order)


def order_output(order: Order) -> dict[str, Any]:
    """The one JSON shape of an order, shared by every door; reads the order afresh unless the service
    that returned it holds every row of it (`Order.recorded`)."""
    if order.recorded is not None:
        return order_payload(order)
    return order_detail(order.pk)


def fill_payload(fill: Fill) -> dict[str, Any]:
    return FillOutput(fill).data


def order_detail(order_id: Any) -> dict[str, Any]:
    """One order as read now (REST's GET orders/{id}/, MCP's get_order and order resource): 404
    order_not_found, or 409 ledger_unreadable naming the row of it that cannot be read as sealed."""
    order = selectors.order_get_or_error(order_id=order_id)
    try:
        return order_payload(order)
    except UNREADABLE_ERRORS as exc:  # a value only the rendering cannot take (text in an integer column)
        raise unreadable_error(selectors.order_queryset().filter(pk=order.pk), exc) from exc


def ledger_page(
    queryset: QuerySet, output: type[serializers.Serializer], *, start: int, stop: int
) -> list[dict[str, Any]]:
    """A page of orders or fills for a program (MCP; REST's list views do the same around DRF's paging):
    every row rendered, or 409 ledger_unreadable naming the rows that cannot be read as sealed. A page
    short of a row would pass for complete (a position summed from fills, an order missed)."""
    return readable_page(queryset, bound(output).to_representation, start=start, stop=stop)


def preview_output(result: PreviewResult) -> dict[str, Any]:
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
        contract=as_dict(contract) if contract else None,
        what_if_error=result.what_if_error,
    )
    return PreviewOutput(payload).data


def trading_switch_payload(row: TradingSwitchEvent) -> dict[str, Any]:
    return TradingSwitchOutput(row).data
