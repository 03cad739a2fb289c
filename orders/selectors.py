"""Reads of the order ledger."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Count, OuterRef, QuerySet, Subquery

from audit.models import LedgerSeal
from audit.readable import UNREADABLE_ERRORS, locate, readable_rows, unreadable_error, untrusted
from audit.seal import Seal, content_of, mac_valid, pk_text, seal_hash, seal_keys
from ibkrgw.prepared import PreparedRead
from ibkrgw.web.listing import within
from orders.models import Commission, Fill, Order, OrderEvent, OrderStatus, RecordedRows, TradingSwitchEvent
from orders.state import WORKING

logger = logging.getLogger(__name__)


def _latest_event(field: str) -> Subquery:
    return Subquery(OrderEvent.objects.filter(order=OuterRef("pk")).order_by("-id").values(field)[:1])


def order_queryset() -> QuerySet[Order]:
    return Order.objects.annotate(current_status=_latest_event("status")).prefetch_related(
        "events", "fills__commission"
    )


def order_get(*, order_id) -> Order | None:
    return order_queryset().filter(pk=order_id).first()


def order_get_or_error(*, order_id) -> Order:
    """The order, or 404 order_not_found (also for ids that are not UUIDs), or 409 ledger_unreadable
    naming its row (or one of its events, fills or commissions) that cannot be read as sealed."""
    from ibkrgw.errors import ErrorCode, GatewayError

    not_found = GatewayError(ErrorCode.ORDER_NOT_FOUND, "No such order.", http_status=404)
    try:
        pk = Order._meta.pk.to_python(order_id)
    except ValidationError:
        raise not_found from None
    try:
        order = order_get(order_id=pk)
    except UNREADABLE_ERRORS as exc:
        raise unreadable_error(order_queryset().filter(pk=pk), exc) from exc
    if order is None:
        raise not_found
    return order


def order_to_act_on(*, order_id, sending: bool = True) -> Order:
    """`order_get_or_error`, and 409 ledger_unreadable when the rows a cancel, a modify or an approval takes
    to the broker are not as the gateway sealed them: the order, its bracket exits and their events must be
    readable, equal to their seals, and each sealed with the seal key. Such a row was changed, or planted,
    behind the application's back (a value stored in a form the gateway never writes, a side or a quantity
    rewritten, an order inserted to be approved): the gateway will not send what it says. A halt still
    cancels every working order at the broker, whatever the ledger says.

    `sending=False` (a rejection, which sends nothing): only that the rows can be read and carried into the
    new row."""
    from ibkrgw.errors import LedgerUnreadable

    order = order_get_or_error(order_id=order_id)
    if sending:
        orders = [order.pk, *Order.objects.filter(parent_id=order.pk).values_list("pk", flat=True)]
        events = list(OrderEvent.objects.filter(order_id__in=orders).values_list("pk", flat=True))
        sealed_alone: dict = {Order: orders, OrderEvent: events}
        named = untrusted(Order, [order.pk], using=DEFAULT_DB_ALIAS, sealed_alone=sealed_alone)
    else:
        named = locate(Order, [order.pk], using=DEFAULT_DB_ALIAS, seals=False)
    if named:
        raise LedgerUnreadable([row.as_dict() for row in named])
    return order


def order_by_client_id(*, account: str, client_order_id: str) -> Order | None:
    return order_queryset().filter(account=account, client_order_id=client_order_id).first()


def order_list(
    *,
    status: str | None = None,
    symbol: str | None = None,
    account: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Order]:
    qs = order_queryset().order_by("-created_at", "-id")
    if status:
        qs = qs.filter(current_status=status)
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    if account:
        qs = qs.filter(account=account)
    return within(qs, "created_at", since=since, until=until)


def order_list_open(*, account: str | None = None) -> QuerySet[Order]:
    qs = order_queryset().filter(current_status__in=WORKING)
    return qs.filter(account=account) if account else qs


def bracket_entries_open() -> list[Order]:
    """Bracket entries with a leg (the entry or an exit) the ledger does not show finished, with their exits."""
    legs = (
        Order.objects.exclude(role="")
        .annotate(current_status=_latest_event("status"))
        .filter(current_status__in=WORKING)
        .values_list("pk", "parent_id")
    )
    entries = {parent or pk for pk, parent in legs}
    # A bracket with a row that cannot be read (written behind the application's back) is named, not read.
    entry_rows = Order.objects.filter(pk__in=entries).prefetch_related("children").order_by("created_at")
    return readable_rows(entry_rows, log=logger, leaving_out="open brackets leave out one whose row cannot be read")


_SAMPLE_TIME = datetime(2000, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)  # a sample no query here uses itself
_BY_ORDER_ID = (Order._meta.pk, uuid.UUID(int=1))  # the one parameter of the reads keyed by an order's id
# Read for every order and every broker report: compiled once per connection.
_LATEST_EVENT = PreparedRead(
    lambda order_id: OrderEvent.objects.filter(order_id=order_id).order_by("-id")[:1],
    params=[_BY_ORDER_ID],
)
_ORDER_BY_PK = PreparedRead(lambda pk: Order.objects.filter(pk=pk)[:1], params=[_BY_ORDER_ID])
_ORDER_PK_BY_KEY = PreparedRead(
    lambda account, key: Order.objects.filter(account=account, client_order_id=key).values_list("pk", flat=True)[:1],
    params=[(Order._meta.get_field("account"), "\x00account"), (Order._meta.get_field("client_order_id"), "\x00key")],
)
_ORDER_BY_REF = PreparedRead(
    lambda ref: Order.objects.filter(client_order_id=ref).order_by("-created_at")[:1],
    params=[(Order._meta.get_field("client_order_id"), "\x00ref")],
)


_FILL_BY_EXEC_ID = PreparedRead(
    lambda exec_id: Fill.objects.filter(exec_id=exec_id)[:1], params=[(Fill._meta.get_field("exec_id"), "\x00exec")]
)
_FILL_PK_BY_EXEC_ID = PreparedRead(
    lambda exec_id: Fill.objects.filter(exec_id=exec_id).values_list("pk", flat=True)[:1],
    params=[(Fill._meta.get_field("exec_id"), "\x00exec")],
)
_COMMISSION_BY_EXEC_ID = PreparedRead(
    lambda exec_id: Commission.objects.filter(exec_id=exec_id).values_list("pk", flat=True)[:1],
    params=[(Commission._meta.get_field("exec_id"), "\x00exec")],
)


def fill_by_exec_id(exec_id: str) -> Fill | None:
    return _FILL_BY_EXEC_ID.first(exec_id)


def fill_recorded(exec_id: str) -> bool:
    """Whether the execution is in the ledger (its key only: true even if a value of its row cannot be read)."""
    return _FILL_PK_BY_EXEC_ID.first(exec_id) is not None


def commission_recorded(exec_id: str) -> bool:
    return _COMMISSION_BY_EXEC_ID.first(exec_id) is not None


_EVENTS_OF = PreparedRead(
    lambda order_id: OrderEvent.objects.filter(order_id=order_id).order_by("id"),
    params=[_BY_ORDER_ID],
)
_FILLS_OF = PreparedRead(
    lambda order_id: Fill.objects.filter(order_id=order_id).order_by("id"),
    params=[_BY_ORDER_ID],
)
_COMMISSIONS_OF = PreparedRead(
    lambda order_id: Commission.objects.filter(fill__order_id=order_id),
    params=[_BY_ORDER_ID],
)
_EXITS_OF = PreparedRead(
    lambda order_id: Order.objects.filter(parent_id=order_id).order_by("role"),
    params=[_BY_ORDER_ID],
)


def order_with_rows(order: Order, *, children: list[Order] | None = None) -> Order:
    """`order` with every row of it as the ledger has it now (`order.recorded`), read with compiled reads.

    Order rows never change, so the row itself is not read again; `children`: a bracket entry's exits
    when the caller holds them (else they are read)."""
    fills = _FILLS_OF.all(order.pk)
    commissions = {commission.fill_id: commission for commission in _COMMISSIONS_OF.all(order.pk)} if fills else {}
    for fill in fills:  # as prefetch_related("fills__commission") leaves them: no query per fill
        Fill.commission.related.set_cached_value(fill, commissions.get(fill.pk))
    exits = _EXITS_OF.all(order.pk) if children is None else sorted(children, key=lambda child: child.role)
    for child in exits:
        child.recorded = RecordedRows(events=_EVENTS_OF.all(child.pk))
    order.recorded = RecordedRows(events=_EVENTS_OF.all(order.pk), children=exits, fills=fills)
    return order


def order_terms_shown(order: Order) -> dict[str, Decimal | str | None]:
    """The quantity and prices in force, for showing an order in a list: the latest modification's terms,
    else the order's own. Reads the events the query prefetched (`order_queryset`), else them once; a value
    that is no decimal (rewritten behind the application's back) is shown as it was written."""
    terms: dict[str, Decimal | str | None] = {
        "quantity": order.quantity,
        "limit_price": order.limit_price,
        "stop_price": order.stop_price,
    }
    for event in sorted(order.events.all(), key=lambda event: event.pk, reverse=True):
        modified = event.data.get("modified") if isinstance(event.data, dict) else None
        if modified and isinstance(modified, dict):
            for name, value in modified.items():
                if name in terms:
                    terms[name] = _decimal_or_text(value)
            break
    return terms


def _decimal_or_text(value: object) -> Decimal | str | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)


def order_latest_event(order: Order) -> OrderEvent | None:
    return _LATEST_EVENT.first(order.pk)


def order_row(pk) -> Order | None:
    """The order row alone (no annotations or prefetches): intents never change once written."""
    return _ORDER_BY_PK.first(pk)


def order_pk_for_key(*, account: str, client_order_id: str):
    """The primary key of the order with this idempotency key in this account, or None."""
    return _ORDER_PK_BY_KEY.first(account, client_order_id)


def order_for_ref(order_ref: str) -> Order | None:
    """The newest order carrying this orderRef (our client_order_id), as broker reports name it."""
    return _ORDER_BY_REF.first(order_ref)


def order_broker_id(order: Order) -> int | None:
    """The broker order id currently in force (a modify may change it)."""
    return (
        OrderEvent.objects.filter(order=order, broker_order_id__isnull=False)
        .order_by("-id")
        .values_list("broker_order_id", flat=True)
        .first()
    )


def fill_list(
    *,
    order_id=None,
    symbol: str | None = None,
    account: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Fill]:
    qs = Fill.objects.select_related("commission", "order").order_by("-executed_at", "-id")
    if order_id:
        qs = qs.filter(order_id=order_id)
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    if account:
        qs = qs.filter(account=account)
    return within(qs, "executed_at", since=since, until=until)


def order_counts_by_status(*, since: datetime | None = None) -> list[tuple[str, int]]:
    """(status, count) of orders by their current status, created since `since`."""
    from django.db.models import Count

    qs = order_list(since=since).prefetch_related(None).order_by().values("current_status").annotate(n=Count("id"))
    return sorted((row["current_status"] or "unknown", row["n"]) for row in qs)


_SWITCH_TABLE = TradingSwitchEvent._meta.db_table
_SWITCH_COLUMNS = [field.attname for field in TradingSwitchEvent._meta.concrete_fields]


_SEAL_COLUMNS = ("row_pk", "content", "seq", "prev_hash", "mac")


def _newest_switch_seal_and_row() -> QuerySet:
    # The newest kill-switch seal and the newest row in one statement, so both come from one snapshot.
    # Led by the seal: one read of the switch's seals, and the row's columns by primary key.
    rows = TradingSwitchEvent.objects.order_by("-id")
    newest_row = {f"row_{name}": Subquery(rows.values(name)[:1]) for name in _SWITCH_COLUMNS}
    seals = LedgerSeal.objects.filter(table=_SWITCH_TABLE).order_by("-seq")
    return seals.annotate(**newest_row).values_list(*_SEAL_COLUMNS, *newest_row)[:1]


_LATEST_SWITCH = PreparedRead(_newest_switch_seal_and_row, params=[])
_NEWEST_SWITCH_ROW = PreparedRead(
    lambda: TradingSwitchEvent.objects.order_by("-id").values_list("id", flat=True)[:1], params=[]
)


@dataclass(frozen=True)
class TradingSwitchState:
    """The kill switch as the ledger says it. `untrusted`: why its newest row is not the one sealed last
    (forged, rewritten or deleted behind the application's back); trading is then halted."""

    halted: bool
    untrusted: str = ""


_untrusted_logged = [""]
# The newest kill-switch seal this process has trusted. Seals are only appended: a newest one with a lower seq
# means the newest rows were deleted together with their seals (a shorter chain, valid in itself), which
# would bring back an older "resumed" row. The memory lasts as long as the process (anchors cover restarts).
_newest_switch_seal_trusted = [0]


# The newest kill-switch row this process read before a send, and whether the switch said halted then.
_switch_before_send: list[tuple[Any, bool] | None] = [None]


def kill_switch_memory_forget() -> None:
    """Forget the newest kill-switch seal trusted: for a database that starts over (each test's)."""
    _newest_switch_seal_trusted[0] = 0
    _switch_before_send[0] = None


def trading_switch_state() -> TradingSwitchState:
    """The kill switch, as its latest row says, provided that row is the newest one sealed, unchanged,
    and its seal carries a MAC made with the seal key.

    Anyone who can write the database could otherwise release a halt with one INSERT (a row saying
    "resumed"), or by deleting or rewriting the halt row. Such a row has no seal, or differs from
    it, or leaves the newest seal naming a row that is gone, or has a seal computed without the
    key: the switch then fails closed (halted) until an admin resumes, which writes a new sealed
    row. `audit_verify` names the row."""
    try:
        found = _LATEST_SWITCH.first()
    except (TypeError, ValueError):  # a value written behind the application's back that no converter can read
        return _untrusted("its newest row holds a value that cannot be read")
    trusted_before = _newest_switch_seal_trusted[0]
    if (found is None or found[2] < trusted_before) and not _switch_seal_exists(trusted_before):
        # The seal this process trusted is gone: rows deleted with their seals. (Were it still there, this read
        # would merely have started before a newer row was committed.)
        if found is None:
            return _untrusted(f"its seals are gone (this process trusted seal {trusted_before})")
        return _untrusted(
            f"its newest seal went back from seal {trusted_before} to seal {found[2]} "
            "(newer rows deleted with their seals)"
        )
    if found is None:  # no kill-switch row is sealed
        newest_pk = _NEWEST_SWITCH_ROW.first()
        if newest_pk is None:
            return TradingSwitchState(halted=False)  # never halted nor resumed
        return _untrusted(f"its newest row {pk_text(newest_pk)} is not the one sealed last (no row is sealed)")
    sealed_pk, sealed_content, sealed_seq, sealed_prev, sealed_mac = found[: len(_SEAL_COLUMNS)]
    values = dict(zip(_SWITCH_COLUMNS, found[len(_SEAL_COLUMNS) :], strict=True))
    if values["id"] is None:
        return _untrusted("its rows are gone but their seals are not")
    pk = pk_text(values["id"])
    if sealed_pk != pk:
        return _untrusted(f"its newest row {pk} is not the one sealed last (the newest sealed row is {sealed_pk})")
    try:
        content = content_of(TradingSwitchEvent, values)
    except (TypeError, ValueError):
        return _untrusted(f"its newest row {pk} holds a value that cannot be read")
    if content != sealed_content:
        return _untrusted(f"its newest row {pk} differs from its seal")
    # The MAC covers the hash of these very fields: one hash and one HMAC per read.
    # (Kill-switch rows sealed before the key existed were stated again under it by audit/0004.)
    if sealed_mac is None:
        return _untrusted(f"its newest row {pk} has a seal without a MAC (not made with the seal key)")
    hashed = seal_hash(Seal(sealed_seq, _SWITCH_TABLE, pk, content, sealed_prev))
    if not mac_valid(hashed, sealed_mac, seal_keys()):
        return _untrusted(f"its newest row {pk} has a seal whose MAC was not made with this gateway's seal key")
    _newest_switch_seal_trusted[0] = max(_newest_switch_seal_trusted[0], sealed_seq)
    return TradingSwitchState(halted=bool(values["halted"]))


def _switch_seal_exists(seq: int) -> bool:
    return seq == 0 or LedgerSeal.objects.filter(seq=seq, table=_SWITCH_TABLE).exists()


def _untrusted(why: str) -> TradingSwitchState:
    reason = f"kill switch ledger tampered with: {why}; trading stays halted until an admin resumes"
    if _untrusted_logged[0] != reason:  # once per distinct finding, not on every read
        _untrusted_logged[0] = reason
        logger.error("%s (run manage.py audit_verify)", reason)
    return TradingSwitchState(halted=True, untrusted=reason)


def trading_halted() -> bool:
    """The kill switch (read inside every order admission); halted when its ledger was tampered with."""
    return trading_switch_state().halted


def trading_halted_before_send() -> bool:
    """The kill switch again, right before a send: a halt or a resume is always a new row, so while the newest
    row is the one read last time, the answer is the same (one read of a primary key); else it is read in full."""
    try:
        newest = _NEWEST_SWITCH_ROW.first()
    except (TypeError, ValueError):  # a value written behind the application's back: the full read says what
        return trading_halted()
    last = _switch_before_send[0]
    if last is not None and last[0] == newest:
        return last[1]
    halted = trading_halted()
    _switch_before_send[0] = (newest, halted)
    return halted


_ORDERS_SINCE = PreparedRead(
    lambda account, since: (
        Order.objects.filter(account=account, created_at__gte=since)
        .values("account")
        .annotate(n=Count("*"))  # COUNT(*): the (account, created_at) index alone answers it
        .values_list("n", flat=True)
    ),
    params=[(Order._meta.get_field("account"), "\x00account"), (Order._meta.get_field("created_at"), _SAMPLE_TIME)],
)


# Held orders recorded before `since` and approved since (their pending_submit event; a partial index).
_APPROVED_SINCE = PreparedRead(
    lambda account, since, recorded_before: (
        OrderEvent.objects.filter(
            status=OrderStatus.PENDING_SUBMIT,
            at__gte=since,
            order__account=account,
            order__created_at__lt=recorded_before,
        )
        .values("status")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    ),
    params=[
        (Order._meta.get_field("account"), "\x00account"),
        (OrderEvent._meta.get_field("at"), _SAMPLE_TIME),
        (Order._meta.get_field("created_at"), _SAMPLE_TIME + timedelta(seconds=1)),
    ],
)


def orders_since(*, account: str, since: datetime) -> int:
    """How many orders of `account` went on their way at or after `since` (the orders-per-minute gate): those
    recorded since, and held orders recorded earlier but approved since (sent now, so they count now)."""
    return (_ORDERS_SINCE.first(account, since) or 0) + (_APPROVED_SINCE.first(account, since, since) or 0)


def trading_switch_latest() -> TradingSwitchEvent | None:
    """The newest kill-switch row, for display; None also when it cannot be read (see trading_switch_state)."""
    try:
        return TradingSwitchEvent.objects.order_by("-id").first()
    except (TypeError, ValueError):
        return None
