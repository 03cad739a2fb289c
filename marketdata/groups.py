"""Quote subscriptions shared by every watcher of a contract, and the per-process quote fan-out.

One broker subscription per contract however many watchers (websocket clients, REST stream
holds) there are; the worker counts watchers and cancels the subscription when the last leaves.

Fan-out: ticks arrive on the IB worker's loop thread (`IbWorker.add_quote_listener`). The
listener only stores the quote in each hub's `pending` dict (latest per contract, under a lock)
and wakes the hub's ASGI loop once with `call_soon_threadsafe`, so the worker never waits for a
client. On the ASGI loop the hub renders one JSON frame per tick and offers it to each watching
client's `LatestOutbox` (latest per contract, one sender task per client). With a Redis channel
layer the hub publishes the frame to the group `quotes.<conId>` instead, and every process's
consumers (which joined that group) receive it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol, TypedDict

from channels.layers import get_channel_layer

from brokers import runtime
from brokers.adapter import ContractInfo, Quote
from ibkrgw.web.ws import LatestOutbox, LoopHubs, cancelling, dumps, shared_channel_layer
from marketdata.payloads import QuoteFrame, quote_frame

logger = logging.getLogger(__name__)

STALE_POLL_S = 1.0  # how often the hub asks the worker which subscriptions went stale


def quote_group_name(con_id: int) -> str:
    return f"quotes.{con_id}"


# -- frames -----------------------------------------------------------------------------------
class QuoteMessage(TypedDict):
    """What travels through the channel layer to consumers (group `quotes.<conId>`)."""

    type: str  # "quote.update"
    con_id: int
    fingerprint: str
    text: str


def _fingerprint(frame: QuoteFrame) -> str:
    # Everything a client sees except age_ms: equal fingerprints are the same quote (a tick that
    # only moved fields we do not send, or the same tick relayed by two processes).
    return "|".join(str(frame[k]) for k in ("bid", "ask", "last", "bid_size", "ask_size", "volume", "time", "stale"))


def quote_message(quote: Quote, *, stale: bool) -> QuoteMessage:
    frame = quote_frame(quote, stale=stale)
    return {"type": "quote.update", "con_id": quote.con_id, "fingerprint": _fingerprint(frame), "text": dumps(frame)}


# -- the hub ----------------------------------------------------------------------------------
class QuoteSink(Protocol):
    """A websocket client as the hub sees it; `offer` must not block."""

    def offer_quote(self, message: QuoteMessage) -> None: ...


class QuoteHub:
    """The fan-out of one ASGI event loop (one per process in production)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()  # guards _pending and _scheduled, written by the worker thread
        self._pending: dict[int, Quote] = {}
        self._scheduled = False
        # Loop-only state below.
        self._sinks: dict[int, set[QuoteSink]] = {}
        self._contracts: dict[int, ContractInfo] = {}
        self._last: dict[int, Quote] = {}
        self._stale: set[int] = set()
        self._stale_task: asyncio.Task | None = None
        self._publisher: LatestOutbox[int, QuoteMessage] | None = None

    # -- called on the worker thread ------------------------------------------------------------
    def push(self, quote: Quote) -> None:
        if quote.con_id not in self._sinks:  # a dict membership test is atomic under the GIL
            return
        with self._lock:
            self._pending[quote.con_id] = quote
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed (server shutdown, end of a test)
            pass

    # -- called on the ASGI loop ------------------------------------------------------------------
    def watch(self, sink: QuoteSink, contract: ContractInfo) -> None:
        """Start delivering `contract`'s quotes to `sink` (once per sink and contract)."""
        adapter = runtime.adapter()  # 503 broker_unavailable when this process has no broker
        _ensure_listener()
        con_id = contract.con_id
        self._sinks.setdefault(con_id, set()).add(sink)
        self._contracts[con_id] = contract
        adapter.quote_subscribe(contract=contract)
        # A client joining a contract others already watch gets the current quote at once.
        cached = self._last.get(con_id) or adapter.quote_cached(con_id=con_id)
        if cached is not None:
            sink.offer_quote(quote_message(cached, stale=con_id in self._stale))
        if self._stale_task is None or self._stale_task.done():
            self._stale_task = self.loop.create_task(self._watch_staleness())

    def unwatch(self, sink: QuoteSink, con_id: int) -> None:
        """Stop delivering `con_id` to `sink`; the broker subscription ends with its last watcher."""
        sinks = self._sinks.get(con_id)
        if sinks is None or sink not in sinks:
            return
        sinks.discard(sink)
        if not sinks:
            del self._sinks[con_id]
            self._contracts.pop(con_id, None)
            self._last.pop(con_id, None)
            self._stale.discard(con_id)
        rt = runtime.current()
        if rt is not None:
            rt.adapter.quote_unsubscribe(con_id=con_id)

    def watchers(self, con_id: int) -> int:
        return len(self._sinks.get(con_id, ()))

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, {}, False
        for con_id, quote in pending.items():
            if con_id not in self._sinks:
                continue
            self._last[con_id] = quote
            self._stale.discard(con_id)  # the worker clears its flag on every tick, too
            self._deliver(quote_message(quote, stale=False))

    def _deliver(self, message: QuoteMessage) -> None:
        if shared_channel_layer():
            # Consumers of every process joined the group; they coalesce per client themselves.
            if self._publisher is None:
                self._publisher = LatestOutbox(_group_send)
            self._publisher.offer(message["con_id"], message)
            return
        for sink in list(self._sinks.get(message["con_id"], ())):
            sink.offer_quote(message)

    async def _watch_staleness(self) -> None:
        """Tell watchers when the worker flags their contract stale (no tick for QUOTE_STALE_AFTER_S)."""
        while self._sinks:
            await asyncio.sleep(STALE_POLL_S)
            rt = runtime.current()
            if rt is None:
                continue
            stale_symbols = set(rt.worker.health().stale_subscriptions)
            for con_id, contract in list(self._contracts.items()):
                if contract.symbol in stale_symbols and con_id not in self._stale and con_id in self._last:
                    self._stale.add(con_id)
                    self._deliver(quote_message(self._last[con_id], stale=True))


async def _group_send(con_id: int, message: QuoteMessage) -> None:
    try:
        await get_channel_layer().group_send(quote_group_name(con_id), dict(message))
    except Exception:  # Redis away: drop this tick, the next one retries
        if cancelling():
            raise
        logger.warning("could not publish a quote to the channel layer", exc_info=True)


hubs: LoopHubs[QuoteHub] = LoopHubs(QuoteHub)
_listener_lock = threading.Lock()
_listening_to: object | None = None


def _on_tick(quote: Quote) -> None:
    """The worker's quote listener: runs on the IB loop for every tick, must never block."""
    for hub in hubs.all():
        hub.push(quote)


def _ensure_listener() -> None:
    """Register `_on_tick` with the current worker once (the runtime may be restarted, e.g. in tests)."""
    global _listening_to
    rt = runtime.current()
    if rt is None:
        return
    with _listener_lock:
        if _listening_to is not rt.worker:
            rt.worker.add_quote_listener(_on_tick)
            _listening_to = rt.worker
