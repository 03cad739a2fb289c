"""The broker adapter across processes: the owner serves it on the channel layer, the others call it.

Protocol (every message is msgpack-safe: str, int, float, bool, None, lists and str-keyed dicts):

- a caller sends `{"type": "broker.call", "id", "method", "kwargs", "reply_to", "deadline"}` to the
  well-known channel `ibkrgw.broker`, which only the owner consumes. `deadline` (epoch seconds) is
  the latest moment the owner may *start* the call; later it is dropped unanswered.
- the owner answers on the caller's `reply_to` channel: first `{"type": "broker.accepted", "id"}`
  when it starts a call that goes to IB, then `{"type": "broker.reply", "id", "ok", "result" |
  "error"}`. Calls answered from memory (health, cached quotes) get the reply at once.
- `reply_to: None` marks a call nobody waits for (quote subscription bookkeeping).

Failure: no acceptance by the deadline (plus transit) means no owner started the call, so it is
`BrokerUnavailable` (503) and safe to repeat. Accepted but unanswered (the owner died mid-call) is
`broker_timeout`: for order calls the outcome is unknown, so that error is a plain `GatewayError`,
which the order service records as `unknown` for reconciliation instead of `rejected`.

Values cross with a small explicit codec: the frozen dataclasses of `brokers.adapter` by name and
fields, `Decimal` and `datetime` tagged as strings, tuples tagged so they come back as tuples.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from brokers import adapter as adapter_types
from brokers import events
from brokers.adapter import (
    AccountRisk,
    AccountSummary,
    Bar,
    BrokerAdapter,
    BrokerHealth,
    BrokerOrderRequest,
    BrokerOrderStatus,
    BrokerSnapshot,
    ContractInfo,
    ContractSpec,
    OrderAck,
    OrderPreview,
    PnLInfo,
    PositionInfo,
    Quote,
)
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError

logger = logging.getLogger(__name__)

BROKER_CHANNEL = "ibkrgw.broker"
ACCEPT_WITHIN_S = 2.0  # an owner that is alive picks a call up within milliseconds
TRANSIT_S = 2.0  # extra wait for an acceptance sent just before the deadline
REPLY_MARGIN_S = 2.0  # the owner's own IB timeout (and its 504) must arrive before ours
HEALTH_CACHE_S = 0.5
SYNC_EVERY_S = 2.0  # a follower re-sends its quote subscriptions this often...
FOLLOWER_TTL_S = 10.0  # ...and the owner drops them when it has not heard from it for this long
SERVER_THREADS = 32
# Answered from the owner's memory on its loop: no IB round trip, so no acceptance message.
INSTANT = frozenset({"health", "orders_allowed", "quote_cached", "managed_accounts", "quote_sync"})
CALLS = frozenset(
    {
        "health",
        "managed_accounts",
        "resolve_contracts",
        "quote_snapshot",
        "quote_cached",
        "bars",
        "account_summary",
        "positions",
        "pnl",
        "order_preview",
        "order_place",
        "order_cancel",
        "orders_cancel_all",
        "order_sends_blocked",
        "open_orders",
        "account_risk",
        "snapshot",
        "orders_allowed",
        "quote_sync",
    }
)
# Calls whose effect at the broker is unknown when the owner accepted them and then went silent.
MUTATING = frozenset({"order_place", "order_cancel", "orders_cancel_all", "order_sends_blocked"})


# -- codec --------------------------------------------------------------------------------------
DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in vars(adapter_types).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == adapter_types.__name__
}


def encode(value: Any) -> Any:
    """Plain data for the channel layer. Raises TypeError for anything outside the broker interface."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum and friends become plain ints
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return str(value)  # StrEnum (ErrorCode) becomes a plain str
    if isinstance(value, Decimal):
        return {"$": "decimal", "v": str(value)}
    if isinstance(value, datetime):
        return {"$": "datetime", "v": value.isoformat()}
    if isinstance(value, tuple):
        return {"$": "tuple", "v": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$": "dict", "v": {str(k): encode(v) for k, v in value.items()}}
    cls = DATACLASSES.get(type(value).__name__)
    if cls is type(value):
        return {"$": cls.__name__, "v": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    raise TypeError(f"{type(value).__name__} cannot cross to another process")


def decode(value: Any) -> Any:
    """The inverse of `encode`. Raises ValueError for an unknown tag."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag, body = value["$"], value["v"]
    if tag == "decimal":
        return Decimal(body)
    if tag == "datetime":
        return datetime.fromisoformat(body)
    if tag == "tuple":
        return tuple(decode(v) for v in body)
    if tag == "dict":
        return {k: decode(v) for k, v in body.items()}
    cls = DATACLASSES.get(tag)
    if cls is None:
        raise ValueError(f"unknown type {tag!r} from another process")
    return cls(**{k: decode(v) for k, v in body.items()})


def encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GatewayError):
        kind = "broker_unavailable" if isinstance(exc, BrokerUnavailable) else "gateway"
        return {
            "kind": kind,
            "code": str(exc.code),
            "message": exc.message,
            "http_status": exc.http_status,
            "details": encode(exc.details),
        }
    return {"kind": "internal", "code": "", "message": f"{type(exc).__name__}: {exc}", "http_status": 500}


class RemoteError(RuntimeError):
    """An unexpected error in the owner (a bug, not a broker answer); rendered as internal_error."""


def decode_error(data: dict[str, Any]) -> Exception:
    if data["kind"] == "broker_unavailable":
        return BrokerUnavailable(
            data["message"], code=data["code"], http_status=data["http_status"], details=decode(data["details"])
        )
    if data["kind"] == "gateway":
        return GatewayError(
            data["code"], data["message"], http_status=data["http_status"], details=decode(data["details"])
        )
    return RemoteError(data["message"])


# -- the loop both sides use --------------------------------------------------------------------
class RpcLoop:
    """A thread with its own asyncio loop and its own channel-layer instance.

    Its own instance because channels-redis binds its receive lock to one loop, and the ASGI loop
    uses the shared instance.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self._thread = threading.Thread(target=self._run, name="broker-rpc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            try:
                self.submit(cancel_all()).result(5)
            except Exception:
                logger.debug("rpc loop tasks did not stop cleanly", exc_info=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# -- the owner's side ---------------------------------------------------------------------------
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


# -- the followers' side ------------------------------------------------------------------------
class _Pending:
    __slots__ = ("accepted", "done", "reply")

    def __init__(self) -> None:
        self.accepted = threading.Event()
        self.done = threading.Event()
        self.reply: dict[str, Any] | None = None


class RemoteAdapter:
    """`BrokerAdapter` of a process that does not own the IB connection: every call goes to the owner.

    Same contract as `IbAdapter`: bounded by `timeout`, `BrokerUnavailable` instead of a hang, the
    owner's `GatewayError`s re-raised with their code, status and details.
    """

    def __init__(self, rpc: RpcLoop, *, timeout: float, follower_id: str, gateway: str) -> None:
        self._rpc, self._timeout, self.follower_id, self._gateway = rpc, timeout, follower_id, gateway
        self._pending: dict[str, _Pending] = {}
        self._health: tuple[float, BrokerHealth] | None = None
        self._health_lock = threading.Lock()
        self._unreachable_since: datetime | None = None
        self.owner_id: str | None = None  # the server_id of the owner that answered last
        self._subs_lock = threading.Lock()
        self._subs: dict[int, tuple[ContractInfo, int]] = {}  # this process's watchers per contract
        self._subs_dirty = False
        self._reply_channel: str = rpc.submit(rpc.layer.new_channel("ibkrgw.reply")).result(5)
        self._tasks = [rpc.submit(self._receive_replies()), rpc.submit(self._sync_quotes())]

    # -- transport --------------------------------------------------------------------------------
    async def _receive_replies(self) -> None:
        while True:
            try:
                message = await self._rpc.layer.receive(self._reply_channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("could not receive broker replies from the channel layer", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            pending = self._pending.get(message.get("id", ""))
            if pending is None:
                continue  # the caller has given up
            if message.get("type") == "broker.reply":
                self.owner_id = message.get("owner")
                pending.reply = message
                pending.done.set()
            pending.accepted.set()

    def _send(self, message: dict[str, Any], wait: float | None) -> None:
        future = self._rpc.submit(self._rpc.layer.send(BROKER_CHANNEL, message))
        if wait is not None:
            future.result(wait)

    def call(self, method: str, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run `method(**kwargs)` in the owner and return its result (or raise its error)."""
        timeout = timeout or self._timeout
        accept_within = min(ACCEPT_WITHIN_S, timeout)
        call_id = uuid.uuid4().hex
        pending = self._pending[call_id] = _Pending()
        message = {
            "type": "broker.call",
            "id": call_id,
            "method": method,
            "kwargs": encode(kwargs),
            "reply_to": self._reply_channel,
            "deadline": time.time() + accept_within,
        }
        try:
            try:
                self._send(message, wait=accept_within)
            except Exception as exc:  # Redis away or the channel full: nothing was sent
                raise BrokerUnavailable(
                    "The channel layer to the process owning the IB connection is not available.",
                    details={"owner": "unreachable", "error": f"{type(exc).__name__}: {exc}"},
                ) from None
            if not pending.accepted.wait(accept_within + TRANSIT_S):
                # Nobody started the call (the owner drops calls after their deadline): safe to repeat.
                raise BrokerUnavailable(
                    f"No process owning the IB connection answered within {accept_within + TRANSIT_S:g}s.",
                    details={"owner": "no_answer", "call": method},
                )
            if not pending.done.wait(timeout + REPLY_MARGIN_S):
                message = f"The process owning the IB connection did not answer {method} within {timeout:g}s."
                details = {"owner": "accepted_no_answer", "call": method, "timeout_s": timeout}
                if method in MUTATING:  # it may have reached the broker: the outcome is unknown
                    raise GatewayError(ErrorCode.BROKER_TIMEOUT, message, http_status=504, details=details)
                raise BrokerUnavailable(message, code=ErrorCode.BROKER_TIMEOUT, details=details)
        finally:
            self._pending.pop(call_id, None)
        reply = pending.reply or {}
        if reply.get("ok"):
            return decode(reply.get("result"))
        raise decode_error(reply["error"])

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    # -- health and state, cached briefly ---------------------------------------------------------
    def health(self) -> BrokerHealth:
        """The owner's health, at most HEALTH_CACHE_S old. Never blocks an event loop: there it
        returns the last known value and refreshes in the background."""
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < HEALTH_CACHE_S:
            return cached[1]
        if _on_event_loop():
            if not self._health_lock.locked():
                threading.Thread(target=self._refresh_health, name="broker-health", daemon=True).start()
            return cached[1] if cached is not None else self._unreachable("owner not asked yet")
        return self._refresh_health()

    def _refresh_health(self) -> BrokerHealth:
        with self._health_lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached[0] < HEALTH_CACHE_S:
                return cached[1]  # another thread refreshed it while we waited
            try:
                health = self.call("health", timeout=min(self._timeout, ACCEPT_WITHIN_S))
                self._unreachable_since = None
            except GatewayError as exc:
                health = self._unreachable(exc.message)
            self._health = (time.monotonic(), health)
            return health

    def _unreachable(self, reason: str) -> BrokerHealth:
        self._unreachable_since = self._unreachable_since or datetime.now(UTC)
        return BrokerHealth(
            state="owner_unreachable",
            gateway=self._gateway,
            client_id=0,
            server_version=None,
            accounts=(),
            connected_since=None,
            down_since=self._unreachable_since,
            last_error=reason,
            reconnects=0,
            reconciled=False,
            down_reason="owner_unreachable",
        )

    def orders_allowed(self) -> bool:
        """Asked afresh each time (an order is about to go out); False when the owner cannot say."""
        try:
            return bool(self.call("orders_allowed"))
        except GatewayError:
            return False

    # -- BrokerAdapter ----------------------------------------------------------------------------
    def _reachable_health(self) -> BrokerHealth:
        health = self.health()
        if health.state == "owner_unreachable":
            raise BrokerUnavailable(health.last_error, details={"owner": "no_answer"})
        return health

    def managed_accounts(self) -> tuple[str, ...]:
        return self._reachable_health().accounts

    @property
    def client_id(self) -> int:
        return self._reachable_health().client_id

    def resolve_contracts(self, *, spec: ContractSpec) -> list[ContractInfo]:
        return self.call("resolve_contracts", spec=spec)

    def quote_snapshot(self, *, contract: ContractInfo) -> Quote:
        return self.call("quote_snapshot", contract=contract)

    def quote_cached(self, *, con_id: int) -> Quote | None:
        if _on_event_loop():
            return None  # never wait for the network on an event loop: the next tick will come
        return self.call("quote_cached", con_id=con_id)

    def quote_subscribe(self, *, contract: ContractInfo) -> None:
        """Fire and forget, like `IbAdapter`: the owner learns this process's watch list by `quote_sync`."""
        with self._subs_lock:
            _, watchers = self._subs.get(contract.con_id, (contract, 0))
            self._subs[contract.con_id] = (contract, watchers + 1)
            self._subs_dirty = True
        self._rpc.loop.call_soon_threadsafe(self._sync_now)

    def quote_unsubscribe(self, *, con_id: int) -> None:
        with self._subs_lock:
            contract, watchers = self._subs.get(con_id, (None, 0))
            if contract is None:
                return
            if watchers > 1:
                self._subs[con_id] = (contract, watchers - 1)
            else:
                del self._subs[con_id]
            self._subs_dirty = True
        self._rpc.loop.call_soon_threadsafe(self._sync_now)

    def bars(
        self, *, contract: ContractInfo, bar_size: str, duration: str, what_to_show: str, use_rth: bool
    ) -> list[Bar]:
        return self.call(
            "bars",
            contract=contract,
            bar_size=bar_size,
            duration=duration,
            what_to_show=what_to_show,
            use_rth=use_rth,
        )

    def account_summary(self, *, account: str) -> AccountSummary:
        return self.call("account_summary", account=account)

    def positions(self, *, account: str) -> list[PositionInfo]:
        return self.call("positions", account=account)

    def pnl(self, *, account: str) -> PnLInfo:
        return self.call("pnl", account=account)

    def order_preview(self, *, request: BrokerOrderRequest) -> OrderPreview:
        return self.call("order_preview", request=request)

    def order_place(self, *, request: BrokerOrderRequest) -> OrderAck:
        return self.call("order_place", request=request)

    def order_cancel(self, *, broker_order_id: int) -> None:
        self.call("order_cancel", broker_order_id=broker_order_id)

    def orders_cancel_all(self) -> None:
        self.call("orders_cancel_all")

    def order_sends_blocked(self, *, blocked: bool) -> None:
        self.call("order_sends_blocked", blocked=blocked)

    def open_orders(self) -> tuple[BrokerOrderStatus, ...]:
        return self.call("open_orders")

    def account_risk(self, *, account: str) -> AccountRisk:
        return self.call("account_risk", account=account)

    def snapshot(self) -> BrokerSnapshot:
        return self.call("snapshot")

    # -- quote subscriptions ----------------------------------------------------------------------
    def take_subscriptions(self) -> list[tuple[ContractInfo, int]]:
        """Hand this process's watchers over (it now owns the connection) and stop syncing them."""
        with self._subs_lock:
            subs, self._subs = list(self._subs.values()), {}
            self._subs_dirty = True
        return subs

    def watchers(self, con_id: int) -> int:
        with self._subs_lock:
            return self._subs.get(con_id, (None, 0))[1]

    def _sync_now(self) -> None:
        with self._subs_lock:
            if not self._subs_dirty:
                return
            self._subs_dirty = False
            contracts = tuple(contract for contract, _ in self._subs.values())
        message = {
            "type": "broker.call",
            "id": uuid.uuid4().hex,
            "method": "quote_sync",
            "kwargs": encode({"follower": self.follower_id, "contracts": contracts}),
            "reply_to": None,
            "deadline": time.time() + FOLLOWER_TTL_S,
        }
        task = asyncio.ensure_future(self._rpc.layer.send(BROKER_CHANNEL, message))
        task.add_done_callback(self._sync_sent)

    def _sync_sent(self, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is not None:
            with self._subs_lock:
                self._subs_dirty = True  # try again at the next round

    async def _sync_quotes(self) -> None:
        """Re-send the watch list regularly: a new owner (after a takeover) learns it within SYNC_EVERY_S,
        and an owner forgets the watchers of a follower that died."""
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            with self._subs_lock:
                self._subs_dirty = self._subs_dirty or bool(self._subs)
            self._sync_now()


class _Flag:
    """`threading.Event`-like view of a condition in the owner (for `worker.reconciled`)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self._predicate = predicate

    def is_set(self) -> bool:
        return self._predicate()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while not self._predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


class RemoteWorker:
    """What `runtime.current().worker` is in a follower: the owner's state, read through `health()`.

    Quote listeners are not called here: ticks arrive in the owner's process.
    """

    def __init__(self, remote: RemoteAdapter) -> None:
        self.remote = remote
        self.reconciled = _Flag(lambda: self.health().reconciled)

    def health(self) -> BrokerHealth:
        return self.remote.health()

    @property
    def state(self) -> str:
        return self.health().state

    @property
    def client_id(self) -> int:
        return self.health().client_id

    @property
    def accounts(self) -> tuple[str, ...]:
        return self.health().accounts

    @property
    def reconnects(self) -> int:
        return self.health().reconnects

    @property
    def down_reason(self) -> str:
        return self.health().down_reason

    @property
    def last_error(self) -> str:
        return self.health().last_error

    def wait_connected(self, timeout: float) -> bool:
        return _Flag(lambda: self.health().state == "connected").wait(timeout)

    def cached_quote(self, con_id: int) -> Quote | None:
        return self.remote.quote_cached(con_id=con_id)

    def subscription_count(self) -> int:
        return 0  # subscriptions are held at the broker by the owner

    def watchers(self, con_id: int) -> int:
        return self.remote.watchers(con_id)

    def add_quote_listener(self, listener: Callable[[Quote], None]) -> None:
        pass

    def remove_quote_listener(self, listener: Callable[[Quote], None]) -> None:
        pass


class AckRecorder:
    """A follower's stand-in for the recorder. Broker events are recorded by the owner's recorder; the
    one thing a follower writes is the acknowledgement of an order it sent, at once, as a process
    without a broker runtime does (`order_sent_record` tolerates the owner's statuses arriving first)."""

    def put(self, item: Any) -> None:
        handler = events.handler_for(type(item))
        if handler is None or type(item).__module__.startswith("brokers."):
            logger.debug("a follower does not record %s", type(item).__name__)
            return
        try:
            handler(item)
        except Exception:  # the owner's status events still move the order on
            logger.exception("could not record %s", type(item).__name__)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        return True

    def stop(self, timeout: float = 5.0) -> None:
        pass
