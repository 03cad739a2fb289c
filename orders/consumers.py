"""Websocket door for order status and fills: `/ws/orders/`.

Server -> client, from the moment the socket opens, in seq order, no gap and no duplicate:
    {"type": "order", "seq", "event": <audit event>, "order": <OrderOutput, as GET orders/{id}/>}
    {"type": "fill", "seq", "event": <fill.recorded | commission.recorded>, "fill": <FillOutput, as GET fills/>}
    {"type": "error", "seq", "event", "code": "ledger_unreadable", "message", "details"}  in the place of an
        order or fill frame whose ledger row cannot be read as it was sealed (docs/audit.md); the stream goes on.

Resuming after a reconnect, from the last seq N the client saw:
    /ws/orders/?after_seq=N               the way to resume: every event after N from the ledger, then
        {"type": "resumed", "after_seq": N, "replayed": <count>, "last_seq": <seq>}, then live events.
        Nothing live can come first. A bad N, or one beyond the ledger's last seq (a seq from another
        database, which would silence every event up to it), is an invalid_request and close 4400.
Client -> server:
    {"action": "resume", "after_seq": N}  the same on an open socket, as long as no event older than
        the ones it already sent is missing. Events flow as soon as the socket opens, so a resume
        sent after some of them arrived may find events after N older than those: they cannot be
        sent without breaking the order, so the resume is refused with `resume_too_late`
        (details: after_seq, sent_after_seq) and the live stream goes on as before, still in
        order and without a gap. Reconnect with ?after_seq=N to receive them. A resume that needs
        nothing older (N at or after what was sent, or no order or fill event in between) is
        answered with `resumed`. An N beyond the ledger is an invalid_request; the socket stays open.
    {"action": "ping"}                    {"type": "pong"}
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, TypedDict
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.web.ws import OrderedOutbox, StreamConsumer, dumps, invalid
from orders.publish import LEDGER_PAGE, LedgerFrame, ledger_frames_after, ledger_last_seq, order_hubs

logger = logging.getLogger(__name__)

MAX_BACKLOG = 2000  # live frames queued for one client before it counts as too slow (close 4008)
_SEQ_TEXT = re.compile(r"[0-9]{1,20}")  # ASCII digits; longer is beyond any ledger


class ResumedFrame(TypedDict):
    type: str  # "resumed"
    after_seq: int
    replayed: int
    last_seq: int


def _after_seq(message: dict[str, Any]) -> int:
    unknown = set(message) - {"action", "after_seq"}
    if unknown:
        raise invalid("Unknown field.", fields={name: ["Unknown field."] for name in sorted(unknown)})
    value = message.get("after_seq")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid('"after_seq" must be a non-negative integer.', fields={"after_seq": ["Expected an integer."]})
    return value


def _after_seq_in_url(scope: dict[str, Any]) -> int | None:
    query = parse_qs(scope.get("query_string", b"").decode(errors="replace"), keep_blank_values=True)
    values = query.get("after_seq")
    if values is None:
        return None
    if len(values) != 1 or not _SEQ_TEXT.fullmatch(values[0]):
        raise invalid('"after_seq" must be one non-negative integer.', fields={"after_seq": ["Expected an integer."]})
    return int(values[0])


def resume_too_late(after: int, sent_after: int) -> GatewayError:
    return GatewayError(
        ErrorCode.RESUME_TOO_LATE,
        f"Events after seq {sent_after} were already sent on this socket; older ones cannot follow them. "
        f"Reconnect to /ws/orders/?after_seq={after} to receive every event after {after} in order.",
        details={"after_seq": after, "sent_after_seq": sent_after},
    )


class OrderStreamConsumer(StreamConsumer):
    stream = "orders"
    actions = ("resume", "ping")

    async def connect(self) -> None:
        # Listen before the client is told it is connected, holding what arrives until the stream opens: a
        # client that connects and then places an order receives every event of it.
        self._open = False
        self.replaying = True  # live frames wait in `held` (while connecting, and during a replay)
        self.held: list[tuple[int, str]] = []
        self.hub = order_hubs.get()
        # The client has (received here, or told us it has) every event up to `cursor`; each later one
        # reaches us live. `floor` is None until this socket sends an event; then every event it sent
        # is after `floor`, so nothing at or before `floor` may follow any more.
        try:
            self.cursor = await self.hub.attach(self)
        except Exception:  # the ledger could not be read to start from: say so, as a failure while opening does
            logger.exception("websocket %s: could not start reading the ledger", self.stream)
            await self.refuse_internal_error()
            return
        self.floor: int | None = None
        try:
            await super().connect()
        finally:
            if not self._open:  # refused, or closed while opening: it never streams
                self.hub.detach(self)

    async def opened(self) -> None:
        self.outbox: OrderedOutbox[str] = OrderedOutbox(
            self._send_text, max_backlog=MAX_BACKLOG, max_send_s=self.max_send_s, on_stalled=self.drop_slow_client
        )
        after = _after_seq_in_url(self.scope)
        if after is None:
            self._release_held()
        else:
            await self._resume(after)

    async def closed(self) -> None:
        self.hub.detach(self)
        outbox = getattr(self, "outbox", None)  # none when opening failed first
        if outbox is not None:
            await outbox.aclose()

    async def action_resume(self, message: dict[str, Any]) -> None:
        await self._resume(_after_seq(message))

    async def _resume(self, after: int) -> None:
        self.replaying = True  # live frames wait in `held` until the replay is queued
        try:
            if after > self.cursor:
                # Beyond what this process has streamed: fine if another process streamed it (it is in the
                # ledger), but a seq the ledger never reached (another database, a typo) would silence
                # every event up to it.
                last = await database_sync_to_async(ledger_last_seq, thread_sensitive=False)()
                if after > last:
                    raise invalid(
                        '"after_seq" is beyond the last event in the ledger.',
                        fields={"after_seq": [f"At most {last}."]},
                        last_seq=last,
                    )
            replayed = 0
            until = self.cursor if self.floor is None else self.floor
            if after < until:
                frames = await self._ledger_page(after, until)
                if frames and self.floor is not None:
                    raise resume_too_late(after, self.floor)
                if frames:
                    self.floor = after
                replayed = await self._replay(frames, until)
            # A client that already has events beyond ours (from an earlier connection) skips them.
            self.cursor = max(self.cursor, after)
            resumed: ResumedFrame = {
                "type": "resumed",
                "after_seq": after,
                "replayed": replayed,
                "last_seq": self.cursor,
            }
            await self.outbox.put(dumps(resumed))
        finally:
            self._release_held()

    def _release_held(self) -> None:
        self.replaying = False
        held, self.held = self.held, []
        for seq, text in held:
            self._enqueue(seq, text)

    async def _ledger_page(self, after: int, until: int) -> list[LedgerFrame]:
        return await database_sync_to_async(ledger_frames_after, thread_sensitive=False)(
            after_seq=after, until_seq=until, limit=LEDGER_PAGE
        )

    async def _replay(self, frames: list[LedgerFrame], until: int) -> int:
        """Queue `frames` (the first page after the resume point) and the pages after it, up to `until`."""
        replayed = 0
        while frames:
            for frame in frames:
                await self.outbox.put(dumps(frame))  # waits for room: a replay is not a reason to drop
            replayed += len(frames)
            if len(frames) < LEDGER_PAGE:
                break
            frames = await self._ledger_page(frames[-1]["seq"], until)
        return replayed

    def offer_event(self, seq: int, text: str) -> None:
        """From the hub, in seq order; never blocks."""
        if self.replaying:
            self.held.append((seq, text))
            if len(self.held) > MAX_BACKLOG:
                self._too_slow()
            return
        if not self._open:
            return
        self._enqueue(seq, text)

    def _enqueue(self, seq: int, text: str) -> None:
        if seq <= self.cursor:
            return  # replayed already, or the client said it has it
        if self.floor is None:
            self.floor = self.cursor
        self.cursor = seq
        if not self.outbox.offer(text):
            self._too_slow()

    def _too_slow(self) -> None:
        # Dropping frames would leave a gap: disconnect instead; the client resumes from its last seq.
        asyncio.get_running_loop().create_task(self.drop_slow_client())

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)
