"""Read-only operator views of the order ledger. Operator actions live in services, not here."""

from __future__ import annotations

from django.contrib import admin

from audit.admin import AppendOnlyAdmin, json_block
from orders.models import Commission, Fill, Order, OrderEvent, TradingSwitchEvent


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    fields = ("id", "at", "status", "broker_order_id", "filled_quantity", "remaining_quantity", "average_fill_price",
              "code", "reason", "source")
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(AppendOnlyAdmin):
    list_display = ("created_at", "client_order_id", "account", "action", "quantity", "symbol", "order_type",
                    "limit_price", "tif", "trading_mode", "actor_label", "source")
    list_filter = ("trading_mode", "action", "order_type", "tif", "sec_type", "source", "created_at")
    search_fields = ("=id", "client_order_id", "symbol", "account", "=correlation_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_select_related = ("parent",)
    readonly_fields = ("preview_pretty",)
    exclude = ("preview",)
    inlines = (OrderEventInline,)

    @admin.display(description="preview")
    def preview_pretty(self, obj: Order) -> str:
        return json_block(obj.preview)


@admin.register(OrderEvent)
class OrderEventAdmin(AppendOnlyAdmin):
    list_display = ("id", "at", "order", "status", "broker_order_id", "filled_quantity", "remaining_quantity",
                    "average_fill_price", "code", "source")
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
