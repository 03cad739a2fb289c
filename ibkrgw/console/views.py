"""Pages of the operator console that act on orders: enter, cancel, modify, close a position,
cancel everything, approve. Each action shows a confirmation page with what will happen (quote,
notional, margin impact) and then calls one public service of `orders.services` as the signed-in
person (source `admin`), so every gate applies exactly as at the other doors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from brokers.selectors import position_list
from ibkrgw.actors import Actor, Source
from ibkrgw.auth import actor_for
from ibkrgw.console import reads
from ibkrgw.console.forms import (
    ClosePositionForm,
    ConfirmForm,
    ConfirmModifyForm,
    ModifyForm,
    OrderEntryForm,
    PlaceOrderForm,
    new_client_order_id,
)
from ibkrgw.errors import ErrorCode, GatewayError
from orders import services
from orders.models import OrderEvent
from orders.models import OrderStatus as S
from orders.selectors import order_get_or_error, order_latest_event, order_list_open
from orders.types import OrderRequest

MODIFIABLE = (S.SUBMITTED, S.PARTIALLY_FILLED, S.INACTIVE)
CANCELLABLE = (S.SUBMITTED, S.PARTIALLY_FILLED, S.INACTIVE, S.UNKNOWN, S.PENDING_SUBMIT)


def _actor(request: HttpRequest) -> Actor:
    return actor_for(request.user, None, Source.ADMIN)


def _page(site, request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(request, template, {**site.each_context(request), "title": title, **context})


def _order_url(site, order) -> str:
    return reverse("admin:orders_order_change", args=[order.pk], current_app=site.name)


def _context_for(order_request: OrderRequest, actor: Actor) -> dict[str, Any]:
    """The service's dry run (every gate, the broker's what-if) plus the quote and the notional."""
    result = services.order_preview(request=order_request, actor=actor)
    if result.contract is None:
        first = result.blocks[0] if result.blocks else {"message": "The contract could not be resolved."}
        raise GatewayError(ErrorCode.INVALID_ORDER, first["message"], http_status=422)
    contract = result.contract
    quote = reads.quote_for_contract(contract)
    preview = asdict(result.preview) if result.preview is not None else {}
    return {
        "contract": contract,
        "account": result.account,
        "blocks": result.blocks,
        "would_be": result.would_be,
        "what_if_error": result.what_if_error,
        **reads.order_context(
            action=order_request.action,
            quantity=order_request.quantity,
            order_type=order_request.order_type,
            limit_price=order_request.limit_price,
            stop_price=order_request.stop_price,
            quote=quote,
            mult=reads.multiplier(contract.multiplier),
            preview=preview,
        ),
    }


def _run(request: HttpRequest, call: Callable[[Actor], Any]) -> tuple[Any, str | None]:
    try:
        return call(_actor(request)), None
    except GatewayError as exc:
        return None, exc.message


# -- order entry ----------------------------------------------------------------------------------
def order_new(site, request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: the confirmation page (preview). POST with confirm: place it."""
    if request.method == "POST" and "client_order_id" in request.POST:
        return _order_place(site, request)
    form = OrderEntryForm(request.POST or None, initial=request.GET.dict() or None)
    if request.method == "POST" and form.is_valid():
        order_request = form.to_request()
        try:
            context = _context_for(order_request, _actor(request))
        except GatewayError as exc:
            form.add_error(None, exc.message)
        else:
            place = PlaceOrderForm(initial={**form.cleaned_data, "client_order_id": new_client_order_id()})
            return _page(
                site, request, "admin/ibkrgw/order_confirm.html", "Confirm the order",
                form=place, order_request=order_request, **context,
            )  # fmt: skip
    return _page(site, request, "admin/ibkrgw/order_form.html", "New order", form=form)


def _order_place(site, request: HttpRequest) -> HttpResponse:
    form = PlaceOrderForm(request.POST)
    if not form.is_valid():
        if form.errors.keys() - {"confirm"}:
            messages.error(request, "The order was changed on its way back; enter it again.")
            return redirect(reverse("admin:ibkrgw_order_new", current_app=site.name))
        entry = OrderEntryForm(request.POST)
        entry.is_valid()
        order_request = entry.to_request()
        try:
            context = _context_for(order_request, _actor(request))
        except GatewayError as exc:
            messages.error(request, exc.message)
            return redirect(reverse("admin:ibkrgw_order_new", current_app=site.name))
        return _page(
            site, request, "admin/ibkrgw/order_confirm.html", "Confirm the order",
            form=form, order_request=order_request, **context,
        )  # fmt: skip
    key = form.cleaned_data["client_order_id"]
    result, error = _run(
        request,
        lambda actor: services.order_submit(request=form.to_request(), actor=actor, idempotency_key=key),
    )
    if error is not None:
        messages.error(request, error)
        entry = OrderEntryForm(initial={k: v for k, v in form.cleaned_data.items() if k != "confirm"})
        return _page(site, request, "admin/ibkrgw/order_form.html", "New order", form=entry)
    order = result.order
    status = order_latest_event(order).status
    messages.success(request, f"Order {order.client_order_id} placed: {status}.")
    return redirect(_order_url(site, order))


# -- cancel, modify -------------------------------------------------------------------------------
def _order_or_back(site, request: HttpRequest, order_id):
    try:
        return order_get_or_error(order_id=order_id), None
    except GatewayError as exc:
        messages.error(request, exc.message)
        return None, redirect(reverse("admin:orders_order_changelist", current_app=site.name))


def _order_context(order) -> dict[str, Any]:
    terms = services.order_terms(order)
    latest = order_latest_event(order)
    return {
        "order": order,
        "latest": latest,
        "terms": terms,
        **reads.order_context(
            action=order.action,
            quantity=terms["quantity"] - (latest.filled_quantity or 0),
            order_type=order.order_type,
            limit_price=terms["limit_price"],
            stop_price=terms["stop_price"],
            quote=reads.quote_for_order(order),
            mult=reads.multiplier(order.multiplier),
        ),
    }


def _local_or(request: HttpRequest, url: str, default: str) -> str:
    """`url` if it is a page of this server (as Django's login checks its `next`), else `default`: a link to a
    console page must not send the operator elsewhere once they have acted."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return default


def order_cancel(site, request: HttpRequest, order_id) -> HttpResponse:
    order, back = _order_or_back(site, request, order_id)
    if back:
        return back
    if request.method == "POST":
        _, error = _run(request, lambda actor: services.order_cancel(order_id=order.pk, actor=actor))
        if error is None:
            messages.success(request, f"Order {order.client_order_id}: cancel sent to the broker.")
        else:
            messages.error(request, f"Order {order.client_order_id}: {error}")
        return redirect(_local_or(request, request.POST.get("next", ""), _order_url(site, order)))
    return _page(
        site, request, "admin/ibkrgw/order_cancel_confirm.html", "Cancel the order",
        next=_local_or(request, request.GET.get("next", ""), ""), **_order_context(order),
    )  # fmt: skip


def order_modify(site, request: HttpRequest, order_id) -> HttpResponse:
    order, back = _order_or_back(site, request, order_id)
    if back:
        return back
    context = _order_context(order)
    if request.method == "POST" and "confirm" in request.POST:
        form = ConfirmModifyForm(request.POST)
        if form.is_valid():
            changes = {k: v for k, v in form.cleaned_data.items() if k != "confirm" and v is not None}
            _, error = _run(request, lambda actor: services.order_modify(order_id=order.pk, actor=actor, **changes))
            if error is None:
                messages.success(request, f"Order {order.client_order_id} modified.")
                return redirect(_order_url(site, order))
            messages.error(request, error)
    form = ModifyForm(request.POST or None, initial=context["terms"])
    if request.method == "POST" and "confirm" not in request.POST and form.is_valid():
        new = {**context["terms"], **{k: v for k, v in form.cleaned_data.items() if v is not None}}
        filled = context["latest"].filled_quantity or Decimal(0)
        after = reads.order_context(
            action=order.action,
            quantity=new["quantity"] - filled,
            order_type=order.order_type,
            limit_price=new["limit_price"],
            stop_price=new["stop_price"],
            quote=context["quote"],
            mult=reads.multiplier(order.multiplier),
        )
        confirm = ConfirmModifyForm(initial=form.cleaned_data)
        return _page(
            site, request, "admin/ibkrgw/order_modify_confirm.html", "Confirm the change",
            form=confirm, new=new, after=after, **context,
        )  # fmt: skip
    return _page(site, request, "admin/ibkrgw/order_modify.html", "Modify the order", form=form, **context)


# -- cancel all -----------------------------------------------------------------------------------
def cancel_all(site, request: HttpRequest) -> HttpResponse:
    open_orders = list(order_list_open())
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        ok, failed = 0, []
        for order in open_orders:
            _, error = _run(request, lambda actor, o=order: services.order_cancel(order_id=o.pk, actor=actor))
            if error is None:
                ok += 1
            else:
                failed.append((order, error))
        messages.success(request, f"Cancel sent for {ok} of {len(open_orders)} open order(s).")
        for order, error in failed:
            messages.error(request, f"Order {order.client_order_id}: {error}")
        return redirect(reverse("admin:orders_order_changelist", current_app=site.name))
    return _page(site, request, "admin/ibkrgw/cancel_all_confirm.html", "Cancel all open orders",
                 form=form, open_orders=open_orders)  # fmt: skip


# -- close a position -----------------------------------------------------------------------------
def _position(con_id: int):
    for position in position_list():
        if position.contract.con_id == con_id and position.quantity:
            return position
    raise GatewayError(ErrorCode.NOT_FOUND, "No open position in this contract.", http_status=404)


def _close_request(position, quantity: Decimal, client_order_id: str = "") -> OrderRequest:
    contract = position.contract
    return OrderRequest(
        symbol=contract.symbol,
        sec_type=contract.sec_type,
        con_id=contract.con_id,
        exchange=contract.exchange,
        currency=contract.currency,
        action="SELL" if position.quantity > 0 else "BUY",
        quantity=quantity,
        order_type="MKT",
        account=position.account,
        client_order_id=client_order_id,
    )


def position_close(site, request: HttpRequest, con_id: int) -> HttpResponse:
    dashboard = reverse("admin:ibkrgw_dashboard", current_app=site.name)
    try:
        position = _position(con_id)
    except GatewayError as exc:
        messages.error(request, exc.message)
        return redirect(dashboard)
    form = ClosePositionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        key = form.cleaned_data["client_order_id"]
        # The quantity confirmed, not today's: a position that changed meanwhile is not closed blind.
        if form.cleaned_data["quantity"] != abs(position.quantity):
            messages.error(request, "The position changed since the confirmation page; review it again.")
            return redirect(request.path)
        order_request = _close_request(position, abs(position.quantity))
        result, error = _run(
            request, lambda actor: services.order_submit(request=order_request, actor=actor, idempotency_key=key)
        )
        if error is not None:
            messages.error(request, error)
            return redirect(dashboard)
        messages.success(request, f"Closing order {result.order.client_order_id} placed.")
        return redirect(_order_url(site, result.order))
    order_request = _close_request(position, abs(position.quantity))
    try:
        context = _context_for(order_request, _actor(request))
    except GatewayError as exc:
        messages.error(request, exc.message)
        return redirect(dashboard)
    if not form.is_bound:
        form = ClosePositionForm(initial={"client_order_id": new_client_order_id(), "quantity": abs(position.quantity)})
    return _page(
        site, request, "admin/ibkrgw/position_close_confirm.html", "Close the position",
        form=form, position=position, order_request=order_request, **context,
    )  # fmt: skip


# -- approval -------------------------------------------------------------------------------------
def approve_review(site, request: HttpRequest, order_id) -> HttpResponse:
    order, back = _order_or_back(site, request, order_id)
    if back:
        return back
    held = OrderEvent.objects.filter(order=order).order_by("-id").first()
    if held is None or held.status != S.PENDING_APPROVAL:
        messages.error(request, f"Order {order.client_order_id} is not waiting for approval.")
        return redirect(reverse("admin:ibkrgw_dashboard", current_app=site.name))
    return _page(site, request, "admin/ibkrgw/approve_confirm.html", "Approve the order",
                 item=reads.approval_item(order, held.at),
                 own_order=services.approval_needs_another_person(order, _actor(request)))  # fmt: skip
