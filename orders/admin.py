"""Read-only operator views of the order ledger. Operator actions live in services, not here:
the admin actions below only call them, as the signed-in person, and report each order's outcome."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import cast

from django.contrib import admin, messages
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from audit.admin import AppendOnlyAdmin, CsvExportMixin, json_block, local_time, plain, shown
from ibkrgw.actors import Actor, Source
from ibkrgw.auth import actor_for, user_may_approve, user_may_trade
from ibkrgw.errors import GatewayError
from orders import services
from orders.models import Commission, Fill, Order, OrderEvent, OrderStatus, TradingSwitchEvent
from orders.selectors import order_queryset, order_terms_shown
from orders.state import WORKING

ROW_CANCELLABLE = WORKING - {OrderStatus.CANCEL_PENDING}
ROW_MODIFIABLE = (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.INACTIVE)


def _latest(field: str) -> Subquery:
    return Subquery(OrderEvent.objects.filter(order=OuterRef("pk")).order_by("-id").values(field)[:1])


def _confirm_page(modeladmin, request: HttpRequest, queryset, action: str, verb: str) -> TemplateResponse:
    """The page a bulk action shows first: the orders it would touch and a confirm button."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{verb}: are you sure?",
        "orders": list(queryset),
        "action": action,
        "verb": verb,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/orders/order/action_confirm.html", context)


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    fields = (
        "id",
        "at_",
        "status",
        "broker_order_id",
        "filled_",
        "remaining_",
        "average_price_",
        "code",
        "reason",
        "source",
    )
    readonly_fields = fields
    ordering = ("id",)
    at_ = shown("at")
    filled_ = shown("filled_quantity", "filled")
    remaining_ = shown("remaining_quantity", "remaining")
    average_price_ = shown("average_fill_price", "average price")

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
    fields = ("exec_id", "executed_", "side", "quantity_", "price_", "exchange", "broker_order_id", "commission_paid")
    readonly_fields = fields
    ordering = ("executed_at", "id")
    executed_ = shown("executed_at", "executed")
    quantity_ = shown("quantity")
    price_ = shown("price")

    @admin.display(description="commission")
    def commission_paid(self, obj: Fill) -> str:
        # A fill without its commission yet raises RelatedObjectDoesNotExist, an AttributeError.
        commission = getattr(obj, "commission", None)
        return "—" if commission is None else f"{plain(commission.commission)} {commission.currency}"

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


def _term(value: Decimal | str | None) -> str:
    return plain(value) if isinstance(value, Decimal) else str(value)


@admin.register(Order)
class OrderAdmin(CsvExportMixin, AppendOnlyAdmin):
    list_display = (
        "created",
        "client_order_id",
        "status",
        "account",
        "order_summary",
        "filled",
        "avg_price",
        "actor",
        "row_actions",
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
    readonly_fields = ("current_status", "terms_in_force", "preview_pretty")
    exclude = ("preview",)
    inlines = (OrderEventInline, FillInline)
    # Data stays read-only; these only ask the services to act (AppendOnlyAdmin has no actions).
    actions = ("cancel_selected", "approve_selected", "reject_selected")
    csv_fields = (
        "created_at",
        "id",
        "client_order_id",
        "account",
        "action",
        "quantity",
        "symbol",
        "sec_type",
        "con_id",
        "order_type",
        "limit_price",
        "stop_price",
        "tif",
        "current_status",
        "filled_qty",
        "avg_px",
        "trading_mode",
        "actor_label",
        "source",
        "parent_id",
        "role",
        # The terms in force: those above are the order as first placed, a modify changes these.
        "quantity_now",
        "limit_price_now",
        "stop_price_now",
    )

    def csv_value(self, obj: Model, name: str):
        if name.endswith("_now"):
            return order_terms_shown(cast(Order, obj))[name.removesuffix("_now")]
        return getattr(obj, name)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        queryset = order_queryset().annotate(
            filled_qty=_latest("filled_quantity"), avg_px=_latest("average_fill_price")
        )
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Order) -> str:
        return local_time(obj.created_at)

    @admin.display(description="status", ordering="current_status")
    def status(self, obj: Order) -> str:
        return format_html(
            '<span class="ibkrgw-status ibkrgw-status-{}">{}</span>', obj.current_status, obj.current_status
        )

    @admin.display(description="order")
    def order_summary(self, obj: Order) -> str:
        terms = order_terms_shown(obj)  # as modified, not as first placed
        text = f"{obj.action} {_term(terms['quantity'])} {obj.symbol} {obj.order_type}"
        if terms["limit_price"] is not None:
            text += f" @ {_term(terms['limit_price'])}"
        if terms["stop_price"] is not None:
            text += f" stop {_term(terms['stop_price'])}"
        return f"{text} {obj.tif}" + (f" ({obj.role})" if obj.role else "")

    @admin.display(description="filled")
    def filled(self, obj: Order) -> str:
        return plain(obj.filled_qty) if obj.filled_qty is not None else "0"

    @admin.display(description="avg price")
    def avg_price(self, obj: Order) -> str:
        return plain(obj.avg_px) if obj.avg_px else "—"

    @admin.display(description="by")
    def actor(self, obj: Order) -> str:
        return f"{obj.actor_label} ({obj.source})"

    def _row_links(self, obj: Order, *, trade: bool, approve: bool) -> str:
        links = []
        if trade and obj.current_status in ROW_CANCELLABLE:
            url = reverse("admin:ibkrgw_order_cancel", args=[obj.pk], current_app=self.admin_site.name)
            links.append(format_html('<a href="{}" class="ibkrgw-row-cancel">Cancel&hellip;</a>', url))
        if trade and obj.current_status in ROW_MODIFIABLE:
            url = reverse("admin:ibkrgw_order_modify", args=[obj.pk], current_app=self.admin_site.name)
            links.append(format_html('<a href="{}" class="ibkrgw-row-modify">Modify&hellip;</a>', url))
        if approve and obj.current_status == OrderStatus.PENDING_APPROVAL:
            url = reverse("admin:ibkrgw_order_approve_review", args=[obj.pk], current_app=self.admin_site.name)
            links.append(format_html('<a href="{}" class="ibkrgw-row-approve">Review&hellip;</a>', url))
        if not links:
            return ""
        joined = format_html(" ".join(["{}"] * len(links)), *links)
        return format_html('<span class="ibkrgw-row-actions">{}</span>', joined)

    # The row's links, one column per set of permissions (a list column sees the row, not who is looking).
    @admin.display(description="")
    def row_actions(self, obj: Order) -> str:
        return self._row_links(obj, trade=True, approve=True)

    @admin.display(description="")
    def row_actions_trade(self, obj: Order) -> str:
        return self._row_links(obj, trade=True, approve=False)

    @admin.display(description="")
    def row_actions_approve(self, obj: Order) -> str:
        return self._row_links(obj, trade=False, approve=True)

    @admin.display(description="current status")
    def current_status(self, obj: Order) -> str:
        return obj.current_status

    @admin.display(description="terms in force")
    def terms_in_force(self, obj: Order) -> str:
        """Quantity and prices now: the fields above are the order as first placed, a modify changes these."""
        terms = order_terms_shown(obj)
        text = f"quantity {_term(terms['quantity'])}"
        if terms["limit_price"] is not None:
            text += f", limit {_term(terms['limit_price'])}"
        if terms["stop_price"] is not None:
            text += f", stop {_term(terms['stop_price'])}"
        placed = {"quantity": obj.quantity, "limit_price": obj.limit_price, "stop_price": obj.stop_price}
        return text + ("" if terms == placed else " (modified)")

    @admin.display(description="preview")
    def preview_pretty(self, obj: Order) -> str:
        return json_block(obj.preview)

    def has_trade_permission(self, request: HttpRequest) -> bool:
        """Cancel selected and the Cancel / Modify links: staff members who may trade."""
        return user_may_trade(request.user)

    def has_approve_permission(self, request: HttpRequest) -> bool:
        """Approve and Reject selected and the Review links: staff members who may approve."""
        return user_may_approve(request.user)

    def get_list_display(self, request: HttpRequest):
        links = {
            (True, True): "row_actions",
            (True, False): "row_actions_trade",
            (False, True): "row_actions_approve",
        }.get((self.has_trade_permission(request), self.has_approve_permission(request)))
        shown = [field for field in super().get_list_display(request) if field != "row_actions"]
        return (*shown, links) if links else tuple(shown)

    def render_change_form(self, request: HttpRequest, context, add=False, change=False, form_url="", obj=None):
        status = obj.current_status if obj is not None else None
        may_trade = self.has_trade_permission(request)
        context = {
            "can_cancel": may_trade and status in ROW_CANCELLABLE,
            "can_modify": may_trade and status in ROW_MODIFIABLE,
            "can_approve": self.has_approve_permission(request) and status == OrderStatus.PENDING_APPROVAL,
            **context,
        }
        if obj is not None:
            # The title says what the order is now (a modify changes its quantity and prices).
            context["subtitle"] = f"{self.order_summary(obj)} ({obj.client_order_id})"
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Cancel selected orders", permissions=["trade"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Order]):
        if not request.POST.get("confirmed"):
            return _confirm_page(self, request, queryset, "cancel_selected", "Cancel these orders")
        _each_order(request, queryset, lambda o, a: services.order_cancel(order_id=o.pk, actor=a), "asked to cancel")

    @admin.action(description="Approve selected orders (waiting for approval)", permissions=["approve"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Order]):
        if not request.POST.get("confirmed"):
            return _confirm_page(self, request, queryset, "approve_selected", "Approve and send these orders")
        _each_order(request, queryset, lambda o, a: services.order_approve(order_id=o.pk, actor=a), "approved and sent")

    @admin.action(description="Reject selected orders (waiting for approval)", permissions=["approve"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        _each_order(request, queryset, lambda o, a: services.order_reject_approval(order_id=o.pk, actor=a), "rejected")


@admin.register(OrderEvent)
class OrderEventAdmin(AppendOnlyAdmin):
    list_display = (
        "id",
        "at_",
        "order",
        "status",
        "broker_order_id",
        "filled_",
        "remaining_",
        "average_price_",
        "code",
        "source",
    )
    at_ = shown("at")
    filled_ = shown("filled_quantity", "filled")
    remaining_ = shown("remaining_quantity", "remaining")
    average_price_ = shown("average_fill_price", "average price")
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
class FillAdmin(CsvExportMixin, AppendOnlyAdmin):
    list_display = (
        "executed",
        "exec_id",
        "account",
        "side",
        "qty",
        "symbol",
        "px",
        "commission_paid",
        "exchange",
        "order",
    )
    csv_fields = (
        "executed_at",
        "exec_id",
        "account",
        "side",
        "quantity",
        "symbol",
        "con_id",
        "price",
        "exchange",
        "commission_paid",
        "order_id",
        "order_ref",
        "broker_order_id",
    )
    list_filter = ("side", "account", "executed_at")
    search_fields = ("=exec_id", "symbol", "order_ref", "=order__id")
    list_select_related = ("order", "commission")
    ordering = ("-executed_at", "-id")

    @admin.display(description="executed", ordering="executed_at")
    def executed(self, obj: Fill) -> str:
        return local_time(obj.executed_at)

    @admin.display(description="quantity", ordering="quantity")
    def qty(self, obj: Fill) -> str:
        return plain(obj.quantity)

    @admin.display(description="price", ordering="price")
    def px(self, obj: Fill) -> str:
        return plain(obj.price)

    @admin.display(description="commission")
    def commission_paid(self, obj: Fill) -> str:
        commission = getattr(obj, "commission", None)
        return "" if commission is None else plain(commission.commission)

    def csv_value(self, obj: Fill, name: str):
        return self.commission_paid(obj) if name == "commission_paid" else getattr(obj, name)


@admin.register(Commission)
class CommissionAdmin(AppendOnlyAdmin):
    list_display = ("created_", "exec_id", "commission_", "currency", "realized_pnl_")
    created_ = shown("created_at", "created")
    commission_ = shown("commission")
    realized_pnl_ = shown("realized_pnl", "realized P&L")
    list_filter = ("currency",)
    search_fields = ("=exec_id",)
    ordering = ("-id",)


@admin.register(TradingSwitchEvent)
class TradingSwitchEventAdmin(AppendOnlyAdmin):
    list_display = ("at_", "halted", "actor_label", "source", "reason")
    at_ = shown("at")
    list_filter = ("halted", "source")
    search_fields = ("reason", "actor_label", "=correlation_id")
    ordering = ("-id",)
