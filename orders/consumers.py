"""Websocket door for order status and fills: `/ws/orders/`.

Server -> client, from the moment the socket opens, in seq order:
    {"type": "order", "seq", "event": <audit event>, "order": <OrderOutput, as GET orders/{id}/>}
    {"type": "fill", "seq", "event": <fill.recorded | commission.recorded>, "fill": <FillOutput, as GET fills/>}
Client -> server:
    {"action": "resume", "after_seq": N}  first every event after N from the ledger, then
        {"type": "resumed", "after_seq": N, "replayed": <count>, "last_seq": <seq>}, then live events;
        no gap and no duplicate. Send it first thing after connecting: live events that were
        already delivered are not repeated, and replayed ones cannot come before them. An N
        beyond the ledger's last seq is an invalid_request (details.last_seq).
    {"action": "ping"}                    {"type": "pong"}
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from channels.db import database_sync_to_async

from ibkrgw.web.ws import OrderedOutbox, StreamConsumer, dumps, invalid
from orders.publish import LEDGER_PAGE, ledger_frames_after, ledger_last_seq, order_hubs

MAX_BACKLOG = 2000  # live frames queued for one client before it counts as too slow (close 4008)


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


class OrderStreamConsumer(StreamConsumer):
    stream = "orders"
    actions = ("resume", "ping")

    async def opened(self) -> None:
        self.replaying = False
        self.held: list[tuple[int, str]] = []  # live frames that arrive during a replay
        self.outbox: OrderedOutbox[str] = OrderedOutbox(
            self._send_text, max_backlog=MAX_BACKLOG, max_send_s=self.max_send_s, on_stalled=self.drop_slow_client
        )
        self.hub = order_hubs.get()
        # Every frame after `cursor` reaches us live. Frames in (sent_from, cursor] went out already.
        self.cursor = await self.hub.attach(self)
        self.sent_from = self.cursor

    async def closed(self) -> None:
        self.hub.detach(self)
        await self.outbox.aclose()

    async def action_resume(self, message: dict[str, Any]) -> None:
        after = _after_seq(message)
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
        self.replaying = True
        replayed = 0
        try:
            if after < self.sent_from:
                position = after
                while True:
                    frames = await database_sync_to_async(ledger_frames_after, thread_sensitive=False)(
                        after_seq=position, until_seq=self.sent_from, limit=LEDGER_PAGE
                    )
                    for frame in frames:
                        await self.outbox.put(dumps(frame))  # waits for room: a replay is not a reason to drop
                    replayed += len(frames)
                    if len(frames) < LEDGER_PAGE:
                        break
                    position = frames[-1]["seq"]
                self.sent_from = after
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
            self.replaying = False
            held, self.held = self.held, []
            for seq, text in held:
                self._enqueue(seq, text)

    def offer_event(self, seq: int, text: str) -> None:
        """From the hub, in seq order; never blocks."""
        if not self._open:
            return
        if self.replaying:
            self.held.append((seq, text))
            if len(self.held) > MAX_BACKLOG:
                self._too_slow()
            return
        self._enqueue(seq, text)

    def _enqueue(self, seq: int, text: str) -> None:
        if seq <= self.cursor:
            return  # replayed already, or the client said it has it
        self.cursor = seq
        if not self.outbox.offer(text):
            self._too_slow()

    def _too_slow(self) -> None:
        # Dropping frames would leave a gap: disconnect instead; the client resumes from its last seq.
        asyncio.get_running_loop().create_task(self.drop_slow_client())

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)
