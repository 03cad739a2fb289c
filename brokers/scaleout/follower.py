"""The followers' side: a broker adapter that calls the owner of the IB connection over the channel layer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from brokers import events
from brokers.adapter import (
    AccountRisk,
    AccountSummary,
    Bar,
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
from brokers.scaleout.protocol import (
    ACCEPT_WITHIN_S,
    BROKER_CHANNEL,
    FOLLOWER_TTL_S,
    HEALTH_CACHE_S,
    MUTATING,
    REPLY_MARGIN_S,
    SYNC_EVERY_S,
    TRANSIT_S,
    RpcLoop,
    _on_event_loop,
    decode,
    decode_error,
    encode,
)
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError

logger = logging.getLogger(__name__)


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

    def resolve_contracts(self, *, spec: ContractSpec, for_order: bool = False) -> list[ContractInfo]:
        return self.call("resolve_contracts", spec=spec, for_order=for_order)

    def quote_snapshot(self, *, contract: ContractInfo, for_order: bool = False) -> Quote:
        return self.call("quote_snapshot", contract=contract, for_order=for_order)

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

    def quote_streams_without_line(self, *, con_ids: list[int]) -> list[int]:
        """As the owner last reported its lines (health is at most a moment old)."""
        health = self.health()
        free = max(0, health.stream_lines - health.stream_lines_in_use)
        with self._subs_lock:
            new = [con_id for con_id in dict.fromkeys(con_ids) if con_id not in self._subs]
        return new[free:] if health.stream_lines else []

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

    def order_place(self, *, request: BrokerOrderRequest, on_ack: Callable[[OrderAck], None] | None = None) -> OrderAck:
        ack = self.call("order_place", request=request)
        if on_ack is not None:
            on_ack(ack)  # the owner's own ledger writer records its broker's reports; nothing here to precede
        return ack

    def order_perm_id(self, *, broker_order_id: int) -> int | None:
        return None  # not worth a round trip to the owner: the broker's report records it

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

    def orders_recheck(self) -> None:
        self.call("orders_recheck")

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
