"""Publishing ledger changes to websocket clients, called on transaction commit.

`seq` is the audit entry's sequence number: the audit log orders every order and fill event, so a
client that reconnects can ask for everything after the last `seq` it saw. The websocket layer
fills these in; they are safe to call when nothing listens and must never raise.

How events reach clients (in seq order, no gap, no duplicate):
- `order_event()` / `fill()` run in whatever thread committed (a request thread, the recorder).
  They only *announce* the new seq: to each `OrderHub` of this process through its loop's
  `call_soon_threadsafe`, and with a Redis channel layer also to the group `orders.all`, which
  every process's hub listens to.
- The hub (one per ASGI event loop) keeps a cursor and, when announced a seq beyond it, reads the
  ledger after its cursor (`ledger_frames_after`) and hands each frame, in seq order, to its
  listeners (the `/ws/orders/` consumers). Audit writers are serialised (one SQLite write lock or
  a PostgreSQL advisory lock held until commit), so the committed ledger is always a prefix in seq
  order: reading "after the cursor" can never skip an entry, even when announcements arrive late
  or out of order.
- Frames show the order/fill as it is when read (the same JSON as `GET orders/{id}/` and
  `GET fills/`); `event` and `seq` say what happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from ibkrgw.errors import LedgerUnreadable
from ibkrgw.web.ws import LoopHubs, cancelling, dumps, shared_channel_layer

if TYPE_CHECKING:
    from audit.readable import Unreadable

logger = logging.getLogger(__name__)

ORDERS_GROUP = "orders.all"
LEDGER_PAGE = 200
# Safety net: also read the ledger this often, for entries nobody announced (another process
# without Redis, e.g. `manage.py mcp`; a service that writes an order/fill entry without publishing).
LEDGER_POLL_S = 1.0
GROUP_REFRESH_S = 3600.0  # channels-redis forgets group members after a day; re-join well before
LEDGER_TARGETS = ("order", "fill")


def order_event(*, order_id: uuid.UUID, event_id: int, seq: int) -> None:
    """An OrderEvent (and its audit entry `seq`) was committed."""
    _announce(seq)


def fill(*, fill_id: int, seq: int) -> None:
    """A Fill (and its audit entry `seq`) was committed."""
    _announce(seq)


def _announce(seq: int) -> None:
    for hub in order_hubs.all():
        try:
            hub.loop.call_soon_threadsafe(hub.notify, seq)
        except RuntimeError:  # that loop just closed
            pass
    if shared_channel_layer():
        try:
            async_to_sync(get_channel_layer().group_send)(ORDERS_GROUP, {"type": "orders.changed", "seq": seq})
        except Exception:  # Redis away: this process's clients are served anyway, others at the next event
            logger.warning("could not announce ledger seq %s on the channel layer", seq, exc_info=True)


# -- frames -----------------------------------------------------------------------------------
class OrderFrame(TypedDict):
    type: str  # "order"
    seq: int
    event: str  # the audit event name, e.g. order.submitted, order.status_changed
    order: dict[str, Any]  # orders.payloads.OrderOutput


class FillFrame(TypedDict):
    type: str  # "fill"
    seq: int
    event: str  # fill.recorded, commission.recorded (the fill then carries its commission)
    fill: dict[str, Any]  # orders.payloads.FillOutput


class UnreadableFrame(TypedDict):
    """In the place of an order or fill frame whose row (or a row read with it) cannot be read as sealed."""

    type: str  # "error"
    seq: int
    event: str
    code: str  # "ledger_unreadable"
    message: str
    details: dict[str, Any]  # table, pk, rows (each table, pk, problems), verify, target_type, target_id


LedgerFrame = OrderFrame | FillFrame | UnreadableFrame


def ledger_last_seq() -> int:
    from audit.models import AuditEntry

    return AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def ledger_frames_after(*, after_seq: int, until_seq: int | None = None, limit: int = LEDGER_PAGE) -> list[LedgerFrame]:
    """Order and fill frames for audit entries with after_seq < seq (<= until_seq), in seq order.

    Database reads: call from a thread. At most `limit` entries are read; fewer frames come back
    only when an entry's order or fill row is missing.
    """
    from audit.models import AuditEntry
    from audit.readable import readable
    from orders.models import Fill
    from orders.payloads import order_payload
    from orders.selectors import order_queryset

    entries = AuditEntry.objects.filter(seq__gt=after_seq, target_type__in=LEDGER_TARGETS).order_by("seq")
    if until_seq is not None:
        entries = entries.filter(seq__lte=until_seq)
    rows = list(entries.values_list("seq", "event", "target_type", "target_id")[:limit])
    order_ids = {_uuid(t) for _, _, kind, t in rows if kind == "order"} - {None}
    exec_ids = {t for _, _, kind, t in rows if kind == "fill"}
    # An order or fill that cannot be read as sealed is not left out: an error frame takes its place.
    orders = readable(order_queryset().filter(pk__in=order_ids), lambda o: (str(o.pk), order_payload(o)))
    fills = readable(Fill.objects.select_related("commission").filter(exec_id__in=exec_ids), _fill_by_exec_id)
    order_payloads, fill_payloads = dict(orders.rows), dict(fills.rows)
    unreadable = {str(pk): named for pk, named in orders.unreadable.items()}
    if fills.unreadable:
        exec_of = dict(Fill.objects.filter(pk__in=list(fills.unreadable)).values_list("pk", "exec_id"))
        unreadable.update({exec_of[pk]: named for pk, named in fills.unreadable.items()})
    frames: list[LedgerFrame] = []
    for seq, event, kind, target_id in rows:
        key = str(_uuid(target_id)) if kind == "order" else target_id
        if kind == "order" and (order := order_payloads.get(key)) is not None:
            frames.append({"type": "order", "seq": seq, "event": event, "order": order})
        elif kind == "fill" and (fill_row := fill_payloads.get(key)) is not None:
            frames.append({"type": "fill", "seq": seq, "event": event, "fill": fill_row})
        elif key in unreadable:
            frames.append(_unreadable_frame(seq, event, kind, target_id, unreadable[key]))
    return frames


def _fill_by_exec_id(row: Any) -> tuple[str, dict[str, Any]]:
    from orders.payloads import fill_payload

    return row.exec_id, fill_payload(row)


def _unreadable_frame(
    seq: int, event: str, kind: str, target_id: str, named: tuple[Unreadable, ...]
) -> UnreadableFrame:
    error = LedgerUnreadable([row.as_dict() for row in named])
    details = {**error.details, "target_type": kind, "target_id": target_id}
    return {
        "type": "error",
        "seq": seq,
        "event": event,
        "code": str(error.code),
        "message": error.message,
        "details": details,
    }


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# -- the hub ----------------------------------------------------------------------------------
class LedgerListener(Protocol):
    def offer_event(self, seq: int, text: str) -> None:
        """A live frame (already JSON), in seq order; must not block."""


class OrderHub:
    """Sequencer of one ASGI event loop: reads each new ledger page once for all its listeners."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.cursor: int | None = None  # last seq handed to listeners
        self._listeners: set[LedgerListener] = set()
        self._attaching = 0
        self._dirty = False
        self._started: asyncio.Task | None = None
        self._catch_up_task: asyncio.Task | None = None
        self._layer_task: asyncio.Task | None = None
        self._poll_task: asyncio.Task | None = None

    async def attach(self, listener: LedgerListener) -> int:
        """Register `listener`; it gets every frame with seq greater than the returned cursor."""
        if self._started is None:
            self._started = self.loop.create_task(self._start())
        self._attaching += 1
        try:
            await asyncio.shield(self._started)
        except Exception:
            if self._started is not None and self._started.done():
                self._started = None  # the next listener tries again
            raise
        finally:
            self._attaching -= 1
        self._listeners.add(listener)
        return self.cursor

    def detach(self, listener: LedgerListener) -> None:
        self._listeners.discard(listener)
        if not self._listeners and not self._attaching:
            # Idle: stop reading and listening; the next listener starts from the ledger's end.
            for task in (self._started, self._catch_up_task, self._layer_task, self._poll_task):
                if task is not None:
                    task.cancel()
            self._started = self._catch_up_task = self._layer_task = self._poll_task = None
            self.cursor, self._dirty = None, False

    def notify(self, seq: int) -> None:
        """A ledger entry `seq` committed (called on the loop)."""
        if self.cursor is not None and seq <= self.cursor:
            return
        self._dirty = True
        self._kick()

    def _kick(self) -> None:
        if self.cursor is not None and (self._catch_up_task is None or self._catch_up_task.done()):
            self._catch_up_task = self.loop.create_task(self._catch_up())

    async def _start(self) -> None:
        self.cursor = await database_sync_to_async(ledger_last_seq, thread_sensitive=False)()
        if shared_channel_layer():
            self._layer_task = self.loop.create_task(self._listen_to_other_processes())
        self._poll_task = self.loop.create_task(self._poll())
        if self._dirty:
            self._kick()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_POLL_S)
            self._dirty = True
            self._kick()

    async def _catch_up(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                frames = await database_sync_to_async(ledger_frames_after, thread_sensitive=False)(
                    after_seq=self.cursor, limit=LEDGER_PAGE
                )
            except Exception:
                logger.exception("could not read the ledger for websocket clients; retrying")
                self._dirty = True
                await asyncio.sleep(1.0)
                continue
            for frame in frames:
                self.cursor = frame["seq"]
                text = dumps(frame)
                for listener in list(self._listeners):
                    listener.offer_event(frame["seq"], text)
            if len(frames) >= LEDGER_PAGE:
                self._dirty = True  # more to read

    async def _listen_to_other_processes(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        joined_at: float | None = None
        failing = False
        try:
            while True:
                try:
                    if joined_at is None or time.monotonic() - joined_at > GROUP_REFRESH_S:
                        await layer.group_add(ORDERS_GROUP, channel)
                        joined_at = time.monotonic()
                        self._dirty = True  # read anything announced while we were not in the group
                        self._kick()
                    async with asyncio.timeout(GROUP_REFRESH_S):
                        message = await layer.receive(channel)
                except TimeoutError:
                    continue
                except Exception:  # Redis away: join again when it is back
                    if cancelling():
                        raise
                    if not failing:
                        logger.warning("lost the channel layer; retrying", exc_info=True)
                    failing, joined_at = True, None
                    await asyncio.sleep(1.0)
                    continue
                failing = False
                if message.get("type") == "orders.changed":
                    self.notify(int(message["seq"]))
        finally:
            await asyncio.shield(layer.group_discard(ORDERS_GROUP, channel))


order_hubs: LoopHubs[OrderHub] = LoopHubs(OrderHub)
