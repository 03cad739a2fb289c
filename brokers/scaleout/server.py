"""The owner's side: serves its broker adapter to the other processes on the channel layer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from brokers.adapter import (
    BrokerAdapter,
    ContractInfo,
    Quote,
)
from brokers.scaleout.protocol import (
    BROKER_CHANNEL,
    CALLS,
    FOLLOWER_TTL_S,
    INSTANT,
    SERVER_THREADS,
    SYNC_EVERY_S,
    RpcLoop,
    decode,
    encode,
    encode_error,
)
from ibkrgw.errors import ErrorCode, GatewayError

logger = logging.getLogger(__name__)


# (group, message) to publish a tick under; supplied by the websocket layer (marketdata.groups).
QuotePublication = Callable[[Quote], tuple[str, dict[str, Any]]]


class BrokerServer:
    """Serves the owner's adapter to the other processes from the channel `ibkrgw.broker`.

    Ticks of contracts that followers watch are published to their websocket group (`publication`),
    since only the owner receives ticks; the websocket consumers drop a tick relayed twice.
    """

    def __init__(
        self,
        rpc: RpcLoop,
        *,
        adapter: BrokerAdapter,
        orders_allowed: Callable[[], bool],
        server_id: str,
        worker: Any = None,
        publication: QuotePublication | None = None,
    ) -> None:
        self._rpc, self._adapter, self._orders_allowed, self.server_id = rpc, adapter, orders_allowed, server_id
        self._executor = concurrent.futures.ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="broker-rpc-call")
        self._handlers: set[asyncio.Task] = set()
        # follower id -> (last heard, monotonic; the contracts it watches). Loop-only state.
        self._follower_subs: dict[str, tuple[float, dict[int, ContractInfo]]] = {}
        # Contracts some follower watches; replaced whole (never mutated), so the IB thread may read it.
        self._relayed: frozenset[int] = frozenset()
        self._relay_lock = threading.Lock()
        self._relay_pending: dict[int, Quote] = {}
        self._worker, self._publication = worker, publication
        if worker is not None and publication is not None:
            worker.add_quote_listener(self._on_tick)
        self._task = rpc.submit(self._serve())

    def stop(self) -> None:
        if self._worker is not None and self._publication is not None:
            self._worker.remove_quote_listener(self._on_tick)
        self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- ticks for followers' websocket clients ---------------------------------------------------
    def _on_tick(self, quote: Quote) -> None:
        """On the IB loop, for every tick: must not block. Keeps the latest per contract, wakes the relay once."""
        if quote.con_id not in self._relayed:
            return
        with self._relay_lock:
            wake = not self._relay_pending
            self._relay_pending[quote.con_id] = quote
        if wake:
            self._rpc.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._relay()))

    async def _relay(self) -> None:
        with self._relay_lock:
            pending, self._relay_pending = self._relay_pending, {}
        for quote in pending.values():
            group, message = self._publication(quote)
            try:
                await self._rpc.layer.group_send(group, message)
            except Exception:  # Redis away: drop this tick, the next one retries
                logger.warning("could not relay a quote to the channel layer", exc_info=True)

    async def _serve(self) -> None:
        layer = self._rpc.layer
        expiry = asyncio.ensure_future(self._expire_followers())
        try:
            while True:
                try:
                    message = await layer.receive(BROKER_CHANNEL)
                except asyncio.CancelledError:
                    raise
                except Exception:  # Redis away: keep trying, callers see 503 meanwhile
                    logger.warning("could not receive broker calls from the channel layer", exc_info=True)
                    await asyncio.sleep(0.5)
                    continue
                if message.get("type") != "broker.call" or time.time() > message.get("deadline", 0):
                    continue  # the caller has given up already: never start a call it no longer waits for
                task = asyncio.ensure_future(self._handle(message))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
        finally:
            expiry.cancel()

    async def _handle(self, message: dict[str, Any]) -> None:
        method, reply_to, call_id = message.get("method", ""), message.get("reply_to"), message.get("id")
        try:
            if method not in CALLS:
                raise GatewayError(ErrorCode.INVALID_REQUEST, f"Unknown broker call {method!r}.")
            kwargs = decode(message.get("kwargs") or {"$": "dict", "v": {}})
            if method in INSTANT:
                result = self._execute(method, kwargs)
            else:
                if reply_to:
                    await self._reply(reply_to, {"type": "broker.accepted", "id": call_id})
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, lambda: self._execute(method, kwargs))
            reply = {"type": "broker.reply", "id": call_id, "ok": True, "result": encode(result)}
        except Exception as exc:  # every failure goes back to the caller, with its code intact
            if not isinstance(exc, GatewayError):
                logger.exception("broker call %s failed in the owner", method)
            reply = {"type": "broker.reply", "id": call_id, "ok": False, "error": encode_error(exc)}
        if reply_to:
            reply["owner"] = self.server_id
            await self._reply(reply_to, reply)

    async def _reply(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self._rpc.layer.send(channel, message)
        except Exception:  # the caller times out and reports 503/504 itself
            logger.warning("could not answer a broker call on %s", channel, exc_info=True)

    def _execute(self, method: str, kwargs: dict[str, Any]) -> Any:
        if method == "orders_allowed":
            return self._orders_allowed()
        if method == "quote_sync":
            return self._quote_sync(**kwargs)
        return getattr(self._adapter, method)(**kwargs)

    def _quote_sync(self, *, follower: str, contracts: tuple[ContractInfo, ...]) -> None:
        """A follower's full set of watched contracts: subscribe what is new, release what is gone."""
        wanted = {c.con_id: c for c in contracts}
        _, before = self._follower_subs.get(follower, (0.0, {}))
        for con_id, contract in wanted.items():
            if con_id not in before:
                self._adapter.quote_subscribe(contract=contract)
        for con_id in before.keys() - wanted.keys():
            self._adapter.quote_unsubscribe(con_id=con_id)
        if wanted:
            self._follower_subs[follower] = (time.monotonic(), wanted)
        else:
            self._follower_subs.pop(follower, None)
        self._relayed = frozenset(con_id for _, subs in self._follower_subs.values() for con_id in subs)

    async def _expire_followers(self) -> None:
        """Release the subscriptions of followers that stopped syncing (exited or died)."""
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            now = time.monotonic()
            for follower, (heard, _) in list(self._follower_subs.items()):
                if now - heard > FOLLOWER_TTL_S:
                    self._quote_sync(follower=follower, contracts=())
