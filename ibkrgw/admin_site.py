"""The operator console: Django's admin site plus a dashboard and the kill switch.

A thin door like the others: the views read through selectors, act through services with an
`Actor` built from the signed-in person (source `admin`), and turn a `GatewayError` into a message
for the operator. Every page here is staff-only (`admin_view`); releasing the kill switch is for
superusers only, and `trading_resume` refuses anybody else as well.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit.readable import Unreadable, readable
from audit.selectors import gate_block_counts
from brokers.selectors import health_get
from ibkrgw.actors import Actor, Source
from ibkrgw.auth import actor_for, user_may_approve, user_may_trade
from ibkrgw.console import charts, reads, views
from ibkrgw.errors import GatewayError
from orders import gates
from orders.models import Order, OrderStatus
from orders.selectors import (
    fill_list,
    order_counts_by_status,
    order_list,
    trading_halted,
    trading_switch_latest,
)
from orders.services import (
    approval_needs_another_person,
    order_approve,
    order_reject_approval,
    trading_halt,
    trading_resume,
)

LATEST_ORDERS = 20
LATEST_FILLS = 10
# The gateway state has no push channel: the header asks for it (a small JSON) this often.
# Orders and fills are pushed over /ws/orders/ and refresh the page's live parts when they happen.
REFRESH_SECONDS = 5


# -- reads for the dashboard ---------------------------------------------------------------------
def _start_of_today() -> datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def _risk_limits() -> list[tuple[str, Any]]:
    return [
        ("Max order quantity", settings.RISK_MAX_ORDER_QUANTITY),
        ("Max order notional", settings.RISK_MAX_ORDER_NOTIONAL),
        ("Price collar (%)", settings.RISK_PRICE_COLLAR_PCT),
        ("Max orders per minute", settings.RISK_MAX_ORDERS_PER_MINUTE),
        ("Duplicate window (s)", settings.RISK_DUPLICATE_WINDOW_S),
        ("Approval required for", ", ".join(sorted(settings.APPROVAL_REQUIRED_FOR)) or "nobody"),
        ("Approval window (s)", settings.APPROVAL_TTL_S),
        ("Approver other than the placer", "yes" if settings.APPROVAL_SECOND_PERSON else "no (one-person desk)"),
    ]


def _live_override() -> dict[str, Any] | None:
    """Whether live orders would pass the arming gate now (None in paper mode)."""
    if settings.TRADING_MODE != "live":
        return None
    try:
        gates.gate_live_override()
    except GatewayError as exc:
        return {"ok": False, "message": exc.message}
    return {"ok": True, "message": f"{settings.LIVE_TRADING_OVERRIDE_FILE} exists"}


def _approval_queue(unreadable: list[Unreadable], viewer: Actor | None) -> list[dict[str, Any]]:
    queue = []
    waiting = readable(order_list(status=OrderStatus.PENDING_APPROVAL).order_by("created_at"))
    unreadable += waiting.named()
    for order in waiting.rows:
        held = list(order.events.all())[-1]  # prefetched; the hold is the latest event
        item = reads.approval_item(order, held.at)
        item["own"] = viewer is not None and approval_needs_another_person(order, viewer)
        queue.append(item)
    return queue


def dashboard_data(viewer: Actor | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, read through the selectors. A ledger row that cannot be read as sealed
    leaves its order or fill out of the lists and is named in `unreadable` (shown on top). `viewer`: the
    person looking, whose own held orders wait for someone else to approve them."""
    today = _start_of_today()
    health = health_get()
    todays_orders = order_list(since=today)
    fills = fill_list(since=today)
    latest_orders = readable(reads.with_fill_progress(todays_orders), stop=LATEST_ORDERS)
    latest_fills = readable(fills, stop=LATEST_FILLS)
    unreadable = latest_orders.named() + latest_fills.named()
    approval_queue = _approval_queue(unreadable, viewer)
    return {
        "health": health,
        "live_override": _live_override(),
        "switch": trading_switch_latest(),
        "risk_limits": _risk_limits(),
        "today": today,
        "order_counts": order_counts_by_status(since=today),
        "orders_today": todays_orders.count(),
        "latest_orders": latest_orders.rows,
        "fills_today": fills.count(),
        "latest_fills": latest_fills.rows,
        "unreadable": list(dict.fromkeys(unreadable)),
        "gate_blocks": gate_block_counts(since=today),
        "approval_queue": approval_queue,
        "account": reads.account_state(health),
        "chain": reads.chain_status(),
        "chart_symbols": _chart_symbols(),
        "working_statuses": views.CANCELLABLE,
    }


def _chart_symbols() -> list[str]:
    """Symbols worth a price chart: what was traded today, else a default."""
    symbols = list(fill_list(since=_start_of_today()).order_by().values_list("symbol", flat=True).distinct()[:10])
    return sorted(symbols) or ["AAPL"]


# -- forms -----------------------------------------------------------------------------------------
class TradingSwitchForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))
    confirm = forms.BooleanField(required=True)


class ApproveForm(forms.Form):
    confirm = forms.BooleanField(required=True)


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=2000, required=False)


def require_trade_permission(request: HttpRequest) -> None:
    if not user_may_trade(request.user):
        raise PermissionDenied("This needs the permission 'Can place, modify and cancel orders'.")


def require_approve_permission(request: HttpRequest) -> None:
    if not user_may_approve(request.user):
        raise PermissionDenied("This needs the permission 'Can approve and reject orders waiting for approval'.")


# -- the site --------------------------------------------------------------------------------------
class OperatorAdminSite(admin.AdminSite):
    site_header = "ibkr-gateway operator console"
    site_title = "ibkr-gateway"
    index_title = "Operator console"
    # "View site" opens the API's own documentation: this server has no other public site.
    site_url = "/api/docs/"
    # The lists need the width; the menu in the header and the index page lead everywhere.
    enable_nav_sidebar = False

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        context["trading_mode"] = settings.TRADING_MODE
        try:
            context["trading_halted"] = trading_halted()
        except DatabaseError:
            # The header must not take the admin down with the database; the dashboard reports it.
            context["trading_halted"] = None
        if request.user.is_active and request.user.is_staff:
            context["console_status"] = reads.header_status()
        return context

    def get_urls(self):
        mine = [
            path("dashboard/", self.admin_view(self.dashboard_view), name="ibkrgw_dashboard"),
            path("dashboard/live/", self.admin_view(self.dashboard_live_view), name="ibkrgw_dashboard_live"),
            path("dashboard/halt/", self.admin_view(self.trading_halt_view), name="ibkrgw_trading_halt"),
            path("dashboard/resume/", self.admin_view(self.trading_resume_view), name="ibkrgw_trading_resume"),
            path(
                "dashboard/orders/<uuid:order_id>/approve/",
                self.admin_view(require_POST(self.order_approve_view)),
                name="ibkrgw_order_approve",
            ),
            path(
                "dashboard/orders/<uuid:order_id>/approve/review/",
                self._guarded_view(views.approve_review, require_approve_permission),
                name="ibkrgw_order_approve_review",
            ),
            path("console/status.json", self.admin_view(self.status_view), name="ibkrgw_status"),
            path("console/orders/new/", self._trade_view(views.order_new), name="ibkrgw_order_new"),
            path("console/orders/cancel-all/", self._trade_view(views.cancel_all), name="ibkrgw_cancel_all"),
            path(
                "console/orders/<uuid:order_id>/cancel/",
                self._trade_view(views.order_cancel),
                name="ibkrgw_order_cancel",
            ),
            path(
                "console/orders/<uuid:order_id>/modify/",
                self._trade_view(views.order_modify),
                name="ibkrgw_order_modify",
            ),
            path(
                "console/positions/<int:con_id>/close/",
                self._trade_view(views.position_close),
                name="ibkrgw_position_close",
            ),
            path("console/charts/", self.admin_view(self.charts_view), name="ibkrgw_charts"),
            path("console/charts/price.json", self.admin_view(self.price_chart_view), name="ibkrgw_chart_price"),
            path("console/charts/equity.json", self.admin_view(self.equity_chart_view), name="ibkrgw_chart_equity"),
            path(
                "console/audit/verify/",
                self.admin_view(require_POST(self.chain_verify_view)),
                name="ibkrgw_chain_verify",
            ),
            path(
                "dashboard/orders/<uuid:order_id>/reject/",
                self.admin_view(require_POST(self.order_reject_view)),
                name="ibkrgw_order_reject",
            ),
        ]
        return mine + super().get_urls()

    def _view(self, view: Callable[..., HttpResponse]):
        return self.admin_view(partial(view, self))

    def _trade_view(self, view: Callable[..., HttpResponse]):
        """A page that places, changes or cancels orders: staff with the trade permission only."""
        return self._guarded_view(view, require_trade_permission)

    def _guarded_view(self, view: Callable[..., HttpResponse], require: Callable[[HttpRequest], None]):
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            require(request)
            return view(self, request, *args, **kwargs)

        return self.admin_view(checked)

    # -- pages
    def status_view(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(reads.header_status())

    def charts_view(self, request: HttpRequest) -> HttpResponse:
        context = {
            **self.each_context(request),
            "title": "Charts",
            "symbol": (request.GET.get("symbol") or "AAPL").upper()[:32],
            "chart_symbols": _chart_symbols(),
        }
        return TemplateResponse(request, "admin/ibkrgw/charts.html", context)

    def price_chart_view(self, request: HttpRequest) -> JsonResponse:
        symbol = (request.GET.get("symbol") or "AAPL").strip()[:32]
        return JsonResponse(charts.price_chart(symbol))

    def equity_chart_view(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(charts.equity_chart(request.GET.get("account") or None))

    def chain_verify_view(self, request: HttpRequest) -> HttpResponse:
        chain = reads.chain_status(force=True)
        if chain["ok"]:
            messages.success(request, f"Audit chain intact: {chain['entries']} entries verified.")
        else:
            messages.error(request, f"Audit chain BROKEN at seq {chain['broken']['seq']}: {chain['broken']['reason']}")
        return redirect(reverse("admin:ibkrgw_dashboard", current_app=self.name))

    def _dashboard_context(self, request: HttpRequest) -> dict[str, Any]:
        return {
            **self.each_context(request),
            **dashboard_data(actor_for(request.user, None, Source.ADMIN)),
            "title": "Dashboard",
            "refresh_seconds": REFRESH_SECONDS,
            "can_resume": request.user.is_superuser,
            "can_trade": user_may_trade(request.user),
            "can_approve": user_may_approve(request.user),
        }

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        return TemplateResponse(request, "admin/ibkrgw/dashboard.html", self._dashboard_context(request))

    def dashboard_live_view(self, request: HttpRequest) -> HttpResponse:
        # The live part alone, fetched by the page every few seconds.
        return TemplateResponse(request, "admin/ibkrgw/dashboard_live.html", self._dashboard_context(request))

    def _switch_page(self, request: HttpRequest, form: TradingSwitchForm, *, halt: bool) -> HttpResponse:
        context = {
            **self.each_context(request),
            "title": "Halt trading" if halt else "Resume trading",
            "form": form,
            "halt": halt,
            "switch": trading_switch_latest(),
        }
        return TemplateResponse(request, "admin/ibkrgw/trading_switch_confirm.html", context)

    def trading_halt_view(self, request: HttpRequest) -> HttpResponse:
        form = TradingSwitchForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            return self._act(
                request,
                lambda actor: trading_halt(actor=actor, reason=reason),
                "Trading halted: new orders are blocked and open orders were sent a cancel.",
            )
        return self._switch_page(request, form, halt=True)

    def trading_resume_view(self, request: HttpRequest) -> HttpResponse:
        # The service refuses non-admins too; this keeps them from even seeing the form.
        if not request.user.is_superuser:
            raise PermissionDenied("Only an admin user can resume trading.")
        form = TradingSwitchForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            return self._act(request, lambda actor: trading_resume(actor=actor, reason=reason), "Trading resumed.")
        return self._switch_page(request, form, halt=False)

    def order_approve_view(self, request: HttpRequest, order_id) -> HttpResponse:
        require_approve_permission(request)
        # Approving sends a real order: only from the review page, with its box ticked.
        if not ApproveForm(request.POST).is_valid():
            messages.error(request, "Tick the confirmation box on the review page to approve.")
            return redirect(reverse("admin:ibkrgw_order_approve_review", args=[order_id], current_app=self.name))
        return self._act(
            request, lambda actor: order_approve(order_id=order_id, actor=actor), "Order {} approved and sent."
        )

    def order_reject_view(self, request: HttpRequest, order_id) -> HttpResponse:
        require_approve_permission(request)
        form = RejectForm(request.POST)
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        return self._act(
            request,
            lambda actor: order_reject_approval(order_id=order_id, actor=actor, reason=reason),
            "Order {} rejected; it will not be sent.",
        )

    def _act(self, request: HttpRequest, call: Callable[[Actor], Any], success: str) -> HttpResponseRedirect:
        """Run one service as the signed-in person; report its outcome as a message, then back to the dashboard."""
        try:
            result = call(actor_for(request.user, None, Source.ADMIN))
        except GatewayError as exc:
            messages.error(request, exc.message)
        else:
            # Messages are escaped when rendered, so the client order id can be shown as it is.
            label = result.client_order_id if isinstance(result, Order) else ""
            messages.success(request, success.format(label))
        return redirect(reverse("admin:ibkrgw_dashboard", current_app=self.name))
