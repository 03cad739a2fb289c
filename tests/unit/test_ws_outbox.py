"""The websocket outboxes end with their client, also when the client goes away during one of their sends."""

from __future__ import annotations

import asyncio

from ibkrgw.web.ws import LatestOutbox, OrderedOutbox


async def test_an_outbox_closed_from_its_own_send_ends_its_task():
    """A send finding the client gone releases the client from inside the outbox's own task: nothing is left
    waiting for frames that will never come (one task per client that ever left, for the server's life)."""
    outboxes: list = []

    async def client_gone(*_frame) -> None:
        await outboxes[0].aclose()

    for outbox in (
        LatestOutbox(client_gone),
        OrderedOutbox(client_gone, max_backlog=8, max_send_s=None, on_stalled=asyncio.sleep),
    ):
        outboxes[:] = [outbox]
        if isinstance(outbox, LatestOutbox):
            outbox.offer("AAPL", "a quote")
            outbox.offer("MSFT", "another")  # still queued when the client went
        else:
            assert outbox.offer("an event") and outbox.offer("another")
        await asyncio.wait_for(asyncio.shield(outbox._task), 5)
        assert outbox._task.done() and outbox._task.exception() is None
