"""Read-only operator views of the order ledger. Operator actions live in services, not here:
the admin actions below only call them, as the signed-in person, and report each order's outcome."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from audit.admin import AppendOnlyAdmin, json_block
from ibkrgw.actors import Actor, Source
from ibkrgw.auth import actor_for
from ibkrgw.errors import GatewayError
from orders import services
from orders.models import Commission, Fill, Order, OrderEvent, OrderStatus, TradingSwitchEvent
from orders.selectors import order_queryset


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    fields = (
        "id",
        "at",
        "status",
        "broker_order_id",
        "filled_quantity",
        "remaining_quantity",
        "average_fill_price",
        "code",
        "reason",
        "source",
    )
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class FillInline(admin.TabularInline):
    model = Fill
    extra = 0
    can_delete = False
    fields = ("exec_id", "executed_at", "side", "quantity", "price", "exchange", "broker_order_id", "commission_paid")
    readonly_fields = fields
    ordering = ("executed_at", "id")

    @admin.display(description="commission")
    def commission_paid(self, obj: Fill) -> str:
        # A fill without its commission yet raises RelatedObjectDoesNotExist, an AttributeError.
        commission = getattr(obj, "commission", None)
        return "—" if commission is None else str(commission)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class CurrentStatusFilter(admin.SimpleListFilter):
    title = "current status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return OrderStatus.choices

    def queryset(self, request, queryset):
        # `current_status` is annotated by orders.selectors.order_queryset (the latest OrderEvent).
        return queryset.filter(current_status=self.value()) if self.value() else queryset


def _each_order(
    request: HttpRequest, queryset: QuerySet[Order], call: Callable[[Order, Actor], object], done: str
) -> None:
    """Call one service per order as the signed-in person; report failures per order instead of stopping."""
    actor = actor_for(request.user, None, Source.ADMIN)
    ok, failed = 0, []
    for order in queryset:
        try:
            call(order, actor)
        except GatewayError as exc:
            failed.append((order, exc.message))
        else:
            ok += 1
    if ok:
        messages.success(request, f"{ok} order(s) {done}.")
    for order, message in failed:
        # Messages are escaped when rendered, so the client order id is shown as stored.
        messages.error(request, f"Order {order.client_order_id}: {message}")


@admin.register(Order)
class OrderAdmin(AppendOnlyAdmin):
    list_display = (
        "created_at",
        "client_order_id",
        "status",
        "account",
        "action",
        "quantity",
        "symbol",
        "order_type",
        "limit_price",
        "tif",
        "trading_mode",
        "actor_label",
        "source",
    )
    list_filter = (
        CurrentStatusFilter,
        "trading_mode",
        "action",
        "order_type",
        "tif",
        "sec_type",
        "source",
        "created_at",
    )
    search_fields = ("=id", "client_order_id", "symbol", "account", "=correlation_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_select_related = ("parent",)
    readonly_fields = ("current_status", "preview_pretty")
    exclude = ("preview",)
    inlines = (OrderEventInline, FillInline)
    # Data stays read-only; these only ask the services to act (AppendOnlyAdmin has no actions).
    actions = ("cancel_selected", "approve_selected", "reject_selected")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        queryset = order_queryset()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @admin.display(description="status", ordering="current_status")
    def status(self, obj: Order) -> str:
        return format_html(
            '<span class="ibkrgw-status ibkrgw-status-{}">{}</span>', obj.current_status, obj.current_status
        )

    @admin.display(description="current status")
    def current_status(self, obj: Order) -> str:
        return obj.current_status

    @admin.display(description="preview")
    def preview_pretty(self, obj: Order) -> str:
        return json_block(obj.preview)

    @admin.action(description="Cancel selected orders")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        _each_order(request, queryset, lambda o, a: services.order_cancel(order_id=o.pk, actor=a), "asked to cancel")

    @admin.action(description="Approve selected orders (waiting for approval)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        _each_order(request, queryset, lambda o, a: services.order_approve(order_id=o.pk, actor=a), "approved and sent")

    @admin.action(description="Reject selected orders (waiting for approval)")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        _each_order(request, queryset, lambda o, a: services.order_reject_approval(order_id=o.pk, actor=a), "rejected")


@admin.register(OrderEvent)
class OrderEventAdmin(AppendOnlyAdmin):
    list_display = (
        "id",
        "at",
        "order",
        "status",
        "broker_order_id",
        "filled_quantity",
        "remaining_quantity",
        "average_fill_price",
        "code",
        "source",
    )
    list_filter = ("status", "source", "at")
    search_fields = ("=order__id", "order__client_order_id", "code")
    list_select_related = ("order",)
    ordering = ("-id",)
    readonly_fields = ("data_pretty",)
    exclude = ("data",)

    @admin.display(description="data")
    def data_pretty(self, obj: OrderEvent) -> str:
        return json_block(obj.data)


@admin.register(Fill)
class FillAdmin(AppendOnlyAdmin):
    list_display = ("executed_at", "exec_id", "account", "side", "quantity", "symbol", "price", "exchange", "order")
    list_filter = ("side", "account", "executed_at")
    search_fields = ("=exec_id", "symbol", "order_ref", "=order__id")
    list_select_related = ("order",)
    ordering = ("-executed_at", "-id")


@admin.register(Commission)
class CommissionAdmin(AppendOnlyAdmin):
    list_display = ("created_at", "exec_id", "commission", "currency", "realized_pnl")
    list_filter = ("currency",)
    search_fields = ("=exec_id",)
    ordering = ("-id",)


@admin.register(TradingSwitchEvent)
class TradingSwitchEventAdmin(AppendOnlyAdmin):
    list_display = ("at", "halted", "actor_label", "source", "reason")
    list_filter = ("halted", "source")
    search_fields = ("reason", "actor_label", "=correlation_id")
    ordering = ("-id",)
