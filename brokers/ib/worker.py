"""The one thread that owns an asyncio loop and `ib_async.IB`.

Other threads never touch `IB`: they call `IbWorker.call(fn, timeout=...)`, which runs
`fn(ib)` on the worker's loop and waits a bounded time. Event handlers on the loop never touch
the ORM: they translate what IB reports into frozen dataclasses and hand them to `sink`
(the recorder thread's queue).

The worker keeps the connection alive: after a disconnect it reconnects with exponential
backoff and jitter, restores every market-data subscription and asks for reconciliation
before trading is allowed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from ib_async import IB, Contract, OrderStatus, Ticker, TradeLogEntry
from ib_async.wrapper import RequestError

from brokers.adapter import (
    BrokerConnectionChanged,
    BrokerExecution,
    BrokerHealth,
    BrokerOrderStatus,
    BrokerOrderWithdrawn,
    BrokerSnapshot,
    ContractInfo,
    Quote,
)
from brokers.ib import pacing, translate
from brokers.ib.errors import ORDER_CANCELLED, OrderErrors
from ibkrgw.errors import BrokerUnavailable, ErrorCode

logger = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 15.0
HEARTBEAT_S = 5.0
# A cancel the broker has not answered this long (no status of the order since), or a modification it has not
# confirmed (no report of the order with the new terms), is checked with it, again after every further period.
UNANSWERED_CANCEL_S = 30.0
UNCONFIRMED_MODIFY_S = 30.0
UNANSWERED_RECHECKS = 3
# After IB refuses a modification, its terms are read again this much later too: by then the ledger holds the
# modification the refusal undoes, however late the thread that sent it recorded it.
REFUSED_CHANGE_RECHECK_S = 2.0
# IB codes that mean "the gateway lost / regained its link to IB's servers".
CONNECTIVITY_LOST, CONNECTIVITY_RESTORED_DATA_LOST, CONNECTIVITY_RESTORED = 1100, 1101, 1102
CLIENT_ID_IN_USE = 326


@dataclass
class _Subscription:
    contract: ContractInfo
    watchers: int = 0
    ticker: Ticker | None = None
    last_tick_monotonic: float = field(default_factory=time.monotonic)
    stale: bool = False
    lined: bool = False  # holds one of the stream lines; otherwise it waits for one to come free


@dataclass
class _Awaited:
    """Our cancel or modification of an order, until the broker answers it."""

    order_ref: str = ""
    terms: dict[str, Decimal | None] = field(default_factory=dict)  # a modification's new terms
    since: float = field(default_factory=time.monotonic)
    rechecks: int = 0


def classify_connect_failure(exc: BaseException, ib: IB) -> str:
    """Why a gateway could not be reached, in words an operator can act on.

    refused: nothing listens (gateway not running, restarting, wrong port); login_pending: the socket
    opens but the API never answers (IB Gateway waiting for its login or two-factor confirmation);
    client_id_in_use: another connection uses our client id (error 326).
    """
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "refused"
    if "326" in str(exc) or "client id is already in use" in str(exc).lower():
        return "client_id_in_use"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "login_pending"
    return "error"


def _with_average_price(report: BrokerOrderStatus, executions: tuple[BrokerExecution, ...]) -> BrokerOrderStatus:
    """A completed order comes without its average fill price: the one of its executions."""
    if report.average_fill_price is not None or not report.filled or not report.perm_id:
        return report
    own = [e for e in executions if e.perm_id == report.perm_id]
    shares = sum((e.quantity for e in own), Decimal(0))
    if shares != report.filled:
        return report  # not all of them in today's executions
    return replace(report, average_fill_price=sum((e.quantity * e.price for e in own), Decimal(0)) / shares)


def _due(awaited: dict[int, _Awaited], after_s: float, now: float) -> dict[int, _Awaited]:
    """What has waited `after_s` or longer for the broker's answer; each waits again, at most UNANSWERED_RECHECKS
    times (an order IB no longer reports at all: the next reconnect's reconciliation settles it)."""
    due = {oid: a for oid, a in awaited.items() if now - a.since >= after_s}
    for order_id, a in due.items():
        a.since, a.rechecks = now, a.rechecks + 1
        if a.rechecks >= UNANSWERED_RECHECKS:
            del awaited[order_id]
    return due


WORKING_AT_BROKER = ("PreSubmitted", "Submitted")
STOPPED = ("Cancelled", "ApiCancelled", "Inactive")  # IB's statuses of an order it stopped (or never took)


def _marked_by_client(trade: Any) -> bool:
    """Whether ib_async itself marked the order Cancelled for IB's error on it (ib_async does so for any
    error on an order it does not consider done)."""
    if trade.orderStatus.status != "Cancelled" or not trade.log:
        return False
    last = trade.log[-1]
    return bool(last.errorCode) and last.status == "Cancelled"


def _refused_modification(trade: Any) -> bool:
    """Whether IB's error on a working order answered a modification: the latest change sent (ib_async logs
    it "Modify") came before the error, and none since. The order works on with the terms it had."""
    last_error = max((i for i, e in enumerate(trade.log) if e.errorCode), default=None)
    modifications = [i for i, e in enumerate(trade.log) if e.message == "Modify"]
    return last_error is not None and bool(modifications) and modifications[-1] < last_error


def _cancelled_by_client(trade: Any) -> bool:
    """Whether ib_async itself marked a working order Cancelled because IB reported an error on it.

    On an order the broker had accepted the error may be a refused modification, and the order keeps
    working with its old terms (202 is a real cancel)."""
    return (
        _marked_by_client(trade)
        and trade.log[-1].errorCode != ORDER_CANCELLED
        and any(e.status in WORKING_AT_BROKER for e in trade.log[:-1])
    )


class IbWorker:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: int,
        account: str | None,
        connect_timeout: float,
        request_timeout: float,
        market_data_type: int,
        throttle: bool,
        stale_after_s: float,
        sink: Callable[[Any], None],
        stream_lines: int = 90,
    ) -> None:
        self.host, self.port, self.client_id, self.account = host, port, client_id, account
        self.connect_timeout, self.request_timeout = connect_timeout, request_timeout
        self.market_data_type, self.throttle, self.stale_after_s = market_data_type, throttle, stale_after_s
        self._sink = sink
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        # ib_async answers one open-orders (or completed-orders) request at a time: a second one sent while the
        # first waits takes its place, and the first never completes. Held on the loop around them.
        self.orders_request = asyncio.Lock()
        # How often a connected gateway must answer a request, and within how long (None: request_timeout).
        self.heartbeat_s = HEARTBEAT_S
        self.heartbeat_timeout_s: float | None = None
        # Our cancels the broker has not answered yet and modifications it has not confirmed yet, by broker
        # order id. Loop thread only.
        self.unanswered_cancel_s = UNANSWERED_CANCEL_S
        self.unconfirmed_modify_s = UNCONFIRMED_MODIFY_S
        self._cancels_sent: dict[int, _Awaited] = {}
        self._modifies_sent: dict[int, _Awaited] = {}
        # IB's errors on this client's orders, the reasons for their stops (loop thread only).
        self.order_errors = OrderErrors()
        # Modifications IB refused: order id -> (code, text, when); reconciliation records the broker's terms.
        self._refused_changes: dict[int, tuple[int, str, float]] = {}
        self._stopping = False
        self._disconnected: asyncio.Event | None = None
        self.ib: IB | None = None
        # State read by other threads; only the worker writes it.
        self.state = "connecting"
        self.connected_since: datetime | None = None
        self.down_since: datetime | None = datetime.now(UTC)
        self.last_error = ""
        self._clash = ""
        self.down_reason = "not_connected_yet"
        self.reconnects = 0
        self.accounts: tuple[str, ...] = ()
        self.server_version: int | None = None
        self.connection_id = ""  # new at every connect: what was sent on an earlier connection is told apart
        self.reconciled = threading.Event()
        # The kill switch's latch: while set, placeOrder is refused on this thread (cancels still pass).
        self.sends_blocked = False
        self._subscriptions: dict[int, _Subscription] = {}  # in subscription order (the oldest waits least)
        # Market-data lines streams may hold; the count is written on the loop, read anywhere.
        self.stream_lines = stream_lines
        self.lines_in_use = 0
        # Lines the deployment's other IB connections hold (IB counts per account): set by the line share.
        self.lines_elsewhere = 0
        self._quotes: dict[int, Quote] = {}
        self._quote_listeners: list[Callable[[Quote], None]] = []
        # Bumped (on the loop) whenever IB reports positions, portfolio, account values or P&L, or the
        # connection changes: an account read computed at version v is current while it stays v.
        self.account_version = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ib-worker-{self.client_id}", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        loop = self._loop
        if loop and loop.is_running():
            loop.call_soon_threadsafe(self._shutdown_on_loop)
        if self._thread:
            self._thread.join(timeout)
        self.state = "stopped"

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state == "connected":
                return True
            time.sleep(0.01)
        return self.state == "connected"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._disconnected = asyncio.Event()
        self.ib = pacing.orders_first(IB())  # orders, cancels and the global cancel never wait behind reads
        self.ib.RaiseRequestErrors = True
        if not self.throttle:
            self.ib.client.MaxRequests = 0
        self._wire_events(self.ib)
        self._ready.set()
        try:
            self._loop.run_until_complete(self._supervise())
        except Exception:  # the supervisor must never die silently
            logger.exception("IB worker stopped by an error")
        finally:
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    def _shutdown_on_loop(self) -> None:
        if self.ib and self.ib.isConnected():
            self.ib.disconnect()
        if self._disconnected:
            self._disconnected.set()

    async def _supervise(self) -> None:
        delay = BACKOFF_START_S
        watchdog = asyncio.ensure_future(self._watch_subscriptions())
        try:
            while not self._stopping:
                self._disconnected.clear()
                self._clash = ""
                try:
                    await self.ib.connectAsync(
                        self.host,
                        self.port,
                        clientId=self.client_id,
                        timeout=self.connect_timeout,
                        account=self.account or "",
                    )
                except Exception as exc:  # refused, timed out, client id in use...
                    self.down_reason = "client_id_in_use" if self._clash else classify_connect_failure(exc, self.ib)
                    self._mark_down(self._clash or f"connect failed: {exc or type(exc).__name__}")
                    if self.ib.isConnected():
                        self.ib.disconnect()
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                delay = BACKOFF_START_S
                await self._on_connected()
                heartbeat = asyncio.ensure_future(self._heartbeat())
                try:
                    await self._disconnected.wait()
                finally:
                    heartbeat.cancel()
                if not self._stopping:
                    self.down_reason = "connection_lost"
                    self._mark_down(self.last_error or "connection lost")
                    self.reconnects += 1
        finally:
            watchdog.cancel()

    async def _heartbeat(self) -> None:
        """A gateway that stops answering (hung, or a socket that died without closing) counts as a lost
        connection: else the worker would stay "connected" and hand orders to a socket nobody reads."""
        ib = self.ib
        while ib is not None and ib.isConnected():
            await asyncio.sleep(self.heartbeat_s)
            self._recheck_unanswered()
            timeout = self.heartbeat_timeout_s or self.request_timeout
            try:
                with pacing.urgent():  # its wait behind queued reads is not the gateway's silence
                    await asyncio.wait_for(ib.reqCurrentTimeAsync(), timeout)
            except TimeoutError:
                self.last_error = f"the gateway did not answer for {timeout:g}s"
                logger.warning("IB gateway at %s:%s stopped answering; reconnecting", self.host, self.port)
                if ib.isConnected():
                    ib.disconnect()  # the supervisor reconnects and reconciles
                return
            except Exception:  # a lost connection ends the loop; another error is not the gateway's silence
                logger.debug("heartbeat request failed", exc_info=True)

    async def _on_connected(self) -> None:
        ib = self.ib
        self.connection_id = uuid.uuid4().hex
        self.order_errors.clear()  # order ids are the connection's (a restarted gateway may use them again)
        # What earlier connections sent and awaited: this connection's reconciliation settles it. Cleared here,
        # before anything is sent on it, so nothing sent while it starts up is forgotten.
        self._cancels_sent.clear()
        self._modifies_sent.clear()
        self._refused_changes.clear()
        self.accounts = tuple(ib.managedAccounts())
        self.server_version = ib.client.serverVersion()
        await self._follow_default_account()
        self.ib.reqMarketDataType(self.market_data_type)
        for sub in self._subscriptions.values():
            if sub.lined:
                sub.ticker = ib.reqMktData(translate.to_ib_contract(sub.contract))
                sub.last_tick_monotonic = time.monotonic()
        self.state = "connected"
        self.connected_since = datetime.now(UTC)
        self.down_since = None
        self.last_error = ""
        self.down_reason = ""
        logger.info(
            "connected to IB at %s:%s as client %s (server v%s)",
            self.host,
            self.port,
            self.client_id,
            self.server_version,
        )
        self._sink(BrokerConnectionChanged(connected=True))
        await self._request_reconciliation()

    async def _follow_default_account(self) -> None:
        """IB sends account updates (each position's market price and value, the portfolio) for one account at
        a time, and ib_async asks for them at connect only when it knows which: IB_ACCOUNT, or the only managed
        account. A login managing several without IB_ACCOUNT follows the first, the gateway's default account."""
        ib = self.ib
        if ib is None or self.account or len(self.accounts) < 2:
            return
        try:
            await asyncio.wait_for(ib.reqAccountUpdatesAsync(self.accounts[0]), self.request_timeout)
        except Exception as exc:  # positions are still listed, without their market value
            logger.warning("could not subscribe account updates for %s: %s", self.accounts[0], exc)

    async def _request_reconciliation(self) -> None:
        self.reconciled.clear()
        try:
            snapshot = await asyncio.wait_for(self.broker_snapshot(), self.request_timeout)
        except Exception as exc:
            logger.warning("could not fetch the broker's orders for reconciliation: %s", exc)
            self.last_error = f"reconciliation fetch failed: {exc}"
            if self.ib.isConnected():
                self.ib.disconnect()  # reconnect and try again rather than trade unreconciled
            return
        self._sink(snapshot)

    def cancel_sent(self, order_id: int) -> None:
        """Our cancel of this order left: its answer (any status of the order) is awaited."""
        self._cancels_sent[order_id] = _Awaited()

    def modify_sent(self, order_id: int, order: Any) -> None:
        """On the loop: our modification of this order (the IB order sent) left; IB confirms it by reporting
        the order with the new terms. A later one replaces it."""
        self._modifies_sent[order_id] = _Awaited(order_ref=order.orderRef or "", terms=translate.order_terms(order))

    def cancels_sending(self, order_ids: Iterable[int]) -> None:
        """On the loop, right before our cancel of these orders (or the global cancel) leaves: IB's
        confirmation is no reason of the broker's, and an earlier error on them does not explain the cancel."""
        for order_id in order_ids:
            self.order_errors.own_cancel(order_id)

    def _recheck_unanswered(self) -> None:
        """A cancel the broker left unanswered, or a modification it did not confirm, while the connection stayed
        up (a lost request) would leave the order `cancel_pending`, or recorded with terms the broker may not
        hold, until the next reconnect: ask the broker for its orders instead (a reconciliation that does not
        hold new orders back, recording the terms the broker holds), and again after every further period."""
        if not self.reconciled.is_set():
            return
        now = time.monotonic()
        cancels = _due(self._cancels_sent, self.unanswered_cancel_s, now)
        modifies = _due(self._modifies_sent, self.unconfirmed_modify_s, now)
        if cancels:
            logger.warning("IB has not answered the cancel of order(s) %s; asking for its orders", list(cancels))
        if modifies:
            logger.warning(
                "IB has not confirmed the modification of order(s) %s; asking for its orders", list(modifies)
            )
        if cancels or modifies:
            asyncio.ensure_future(self._recheck(unconfirmed=tuple(a.order_ref for a in modifies.values())))

    def withdraw_unsent_orders(self) -> None:
        """On the loop, as the kill switch's latch closes: this client's new orders still queued for IB's
        message budget are taken back, never sent, with their changes and cancels queued behind them. An
        order qualifies while the broker has not reported on it and its placement is still queued: all of
        its placeOrder messages (the placement and one per modification) wait. The ledger records them
        cancelled; ib_async counts them done."""
        ib = self.ib
        if ib is None:
            return
        trades = ib.wrapper.trades
        not_reported = (OrderStatus.PendingSubmit, OrderStatus.PendingCancel, OrderStatus.Cancelled)

        def unsent(order_id: int, queued: int) -> bool:
            trade = trades.get((self.client_id, order_id))
            return (
                trade is not None
                and trade.orderStatus.status in not_reported
                and not trade.order.permId
                and queued == 1 + sum(entry.message == "Modify" for entry in trade.log)
            )

        withdrawn = pacing.withdraw_queued_orders(ib, unsent)
        now = datetime.now(UTC)
        for order_id in withdrawn:
            trade = trades[(self.client_id, order_id)]
            trade.orderStatus.status = OrderStatus.Cancelled  # not among ib_async's open trades any more
            trade.log.append(
                TradeLogEntry(now, OrderStatus.Cancelled, "withdrawn by the kill switch before it was sent")
            )
            self._sink(
                BrokerOrderWithdrawn(
                    order_ref=trade.order.orderRef or "", broker_order_id=order_id, client_id=self.client_id, at=now
                )
            )
        if withdrawn:
            logger.warning("kill switch: %d order(s) taken back before they left for the broker", len(withdrawn))

    def recheck(self) -> None:
        """On the loop: reconcile the broker's orders, behind every request sent before (a reconnect's
        reconciliation, if one is due, does it anyway)."""
        if self.reconciled.is_set():
            asyncio.ensure_future(self._recheck())

    async def _recheck(self, unconfirmed: tuple[str, ...] = ()) -> None:
        asked_at = datetime.now(UTC)  # a modification recorded after this may have left after the question
        try:
            snapshot = await asyncio.wait_for(self.broker_snapshot(), self.request_timeout)
        except Exception as exc:  # the next reconnect reconciles anyway
            logger.warning("could not fetch the broker's orders to re-check them: %s", exc)
            return
        self._sink(replace(snapshot, unconfirmed=unconfirmed, asked_at=asked_at) if unconfirmed else snapshot)

    async def broker_snapshot(self) -> BrokerSnapshot:
        """The broker's view of every order and execution of the account (on the worker loop)."""
        ib = self.ib
        with pacing.urgent():  # orders wait for reconciliation: it goes ahead of queued market data requests
            async with self.orders_request:
                open_trades = await ib.reqAllOpenOrdersAsync()
                completed = await ib.reqCompletedOrdersAsync(False)
            fills = await ib.reqExecutionsAsync()
        seen: dict[tuple, Any] = {}
        # A working order ib_async marked Cancelled itself is left to the broker's own answers above.
        for trade in [*completed, *open_trades, *(t for t in ib.trades() if not _cancelled_by_client(t))]:
            key = (trade.order.permId or None, trade.order.clientId, trade.order.orderId, trade.order.orderRef)
            seen[key] = trade
        # What-if previews are not orders: they must never be matched to an intent.
        executions = tuple(translate.execution(f) for f in fills)
        # A completed order comes without its order id: its permanent id names it.
        own_by_perm = {
            t.order.permId: t.order.orderId
            for t in (ib.trades() if ib is not None else ())
            if t.order.clientId == self.client_id and t.order.orderId and t.order.permId
        }
        orders = tuple(
            self._with_refused_change(
                t, _with_average_price(self._order_report(t, terms=True, own_by_perm=own_by_perm), executions)
            )
            for t in seen.values()
            if t.order.orderRef and not t.order.whatIf
        )
        self._forget_refused_changes()
        commissions = tuple(c for c in (translate.commission(f.commissionReport) for f in fills) if c)
        return BrokerSnapshot(
            orders=orders,
            executions=executions,
            commissions=commissions,
            taken_at=datetime.now(UTC),
            session_started=self.connected_since,
            connection=self.connection_id,
        )

    def _with_refused_change(self, trade: Any, report: BrokerOrderStatus) -> BrokerOrderStatus:
        """A working order whose latest modification IB refused: its terms in this snapshot are the broker's
        answer to that modification, with IB's code and text (no later change is on its way)."""
        refused = self._refused_changes.get(trade.order.orderId) if trade.order.clientId == self.client_id else None
        if refused is None or report.status not in WORKING_AT_BROKER or not _refused_modification(trade):
            return report  # (changed again since: that change may not be in this answer yet)
        code, text, _ = refused
        return replace(report, change_refused=True, error_code=code, reason=text)

    def _forget_refused_changes(self) -> None:
        """A refusal is reported by the snapshots of the next few seconds (`REFUSED_CHANGE_RECHECK_S`), then
        forgotten."""
        now = time.monotonic()
        for order_id, (_, _, at) in list(self._refused_changes.items()):
            if now - at > 2 * REFUSED_CHANGE_RECHECK_S:
                del self._refused_changes[order_id]

    def _mark_down(self, reason: str) -> None:
        was_connected, was_degraded = self.state == "connected", self.state == "degraded"
        self.state = "reconnecting" if not self._stopping else "stopped"
        self.reconciled.clear()
        self.last_error = reason
        if self.down_since is None:
            self.down_since = datetime.now(UTC)
        self.connected_since = None
        if was_connected:
            logger.warning("IB connection lost: %s", reason)
            self._sink(BrokerConnectionChanged(connected=False, reason=reason))
        elif was_degraded:  # its loss (1100) is on record already
            logger.warning("IB connection lost while the gateway was cut off from IB's servers: %s", reason)

    # -- events (on the loop; translate and hand off, never touch the ORM) -------------------
    def _wire_events(self, ib: IB) -> None:
        ib.disconnectedEvent += self._on_disconnected
        ib.errorEvent += self._on_error
        ib.orderStatusEvent += self._on_order_status
        ib.openOrderEvent += self._on_open_order
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.pendingTickersEvent += self._on_tickers
        account_events = (ib.positionEvent, ib.updatePortfolioEvent, ib.accountSummaryEvent, ib.accountValueEvent)
        for event in (*account_events, ib.pnlEvent):
            event += self._on_account_change
        ib.connectedEvent += self._on_account_change

    def _on_account_change(self, *_args) -> None:
        self.account_version += 1

    def _on_disconnected(self) -> None:
        self.account_version += 1
        if self._disconnected:
            self._disconnected.set()

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        if req_id > 0:
            self._on_order_error(req_id, code, message)
        if code == CLIENT_ID_IN_USE:
            # IB says why before the connect attempt times out: show the real cause at once.
            self._clash = self.last_error = f"{code}: {message}"
            self.down_reason = "client_id_in_use"
        elif code == CONNECTIVITY_LOST:
            # The gateway is up but cut off from IB's servers: as much a loss of the broker as a dropped socket.
            was_connected = self.state == "connected"
            self.last_error = f"{code}: {message}"
            self.down_reason = "gateway_lost_ib_servers"
            self.state = "degraded"
            if was_connected:
                self.down_since = datetime.now(UTC)
                logger.warning("IB gateway lost its connection to IB's servers: %s", self.last_error)
                self._sink(BrokerConnectionChanged(connected=False, reason=self.last_error))
        elif code in (CONNECTIVITY_RESTORED, CONNECTIVITY_RESTORED_DATA_LOST):
            was_degraded = self.state == "degraded"
            self.state = "connected"
            self.last_error = ""
            self.down_reason = ""
            if was_degraded:
                self.down_since = None
                logger.info("IB gateway reconnected to IB's servers: %s: %s", code, message)
                self._sink(BrokerConnectionChanged(connected=True, reason=f"{code}: {message}"))
            if code == CONNECTIVITY_RESTORED_DATA_LOST:
                # IB dropped our market data: subscribe again.
                for sub in self._subscriptions.values():
                    if sub.lined:
                        self._resubscribe(sub)
            asyncio.ensure_future(self._request_reconciliation())

    def _on_order_error(self, order_id: int, code: int, message: str) -> None:
        """IB's error on one of this client's orders is kept as the reason for its stop. ib_async handles the
        error first: it marks an order it does not consider done Cancelled (`_on_order_status` leaves that
        to this handler, which follows at once) and skips one already done, as IB usually reports the stop
        just before the error: that stop is reported again, with IB's words."""
        trade = self.ib.wrapper.trades.get((self.client_id, order_id)) if self.ib is not None else None
        if trade is None or not trade.order.orderRef or trade.order.whatIf:
            return  # not an order (a request id), or not one of ours
        new_order = not any(e.status in WORKING_AT_BROKER for e in trade.log)
        if _cancelled_by_client(trade) and _refused_modification(trade):
            # IB refused a change of a working order: it works on with its earlier terms. The reconciliation
            # `_on_order_status` asked for records them; so does another one later, should the ledger record
            # the change only after the first.
            self._refused_changes[order_id] = (code, message, time.monotonic())
            asyncio.get_running_loop().call_later(REFUSED_CHANGE_RECHECK_S, self.recheck)
        noted = self.order_errors.note(order_id, code, message, new_order=new_order)
        if (
            (noted or _marked_by_client(trade))
            and trade.orderStatus.status in STOPPED
            and not _cancelled_by_client(trade)
        ):
            self._sink(self._order_report(trade, at=datetime.now(UTC)))

    def _order_report(
        self, trade: Any, *, at: datetime | None = None, terms: bool = False, own_by_perm: dict[int, int] | None = None
    ) -> BrokerOrderStatus:
        """The broker's status of an order, with IB's error that explains its stop (if the order is ours).
        A working status forgets an earlier error on the order: it stopped nothing."""
        order, status = trade.order, trade.orderStatus.status
        own = order.clientId == self.client_id and order.orderId
        order_id = order.orderId if own else (own_by_perm or {}).get(order.permId)
        error = None
        if order_id and status in WORKING_AT_BROKER:
            self.order_errors.working(order_id)
        elif order_id and status in STOPPED:
            error = self.order_errors.of(order_id)
        return translate.order_status(trade, at=at, terms=terms, error=error)

    def _on_order_status(self, trade) -> None:
        if trade.order.clientId == self.client_id:
            self._cancels_sent.pop(trade.order.orderId, None)  # the broker answered (whatever it said)
        if not trade.order.orderRef or trade.order.whatIf:
            return
        if _cancelled_by_client(trade):
            # Not the broker's word: ask the broker what it holds (reconciliation records the truth).
            logger.warning(
                "IB reported error %s on working order %s (%s); checking with the broker",
                trade.log[-1].errorCode,
                trade.order.orderId,
                trade.order.orderRef,
            )
            asyncio.ensure_future(self._request_reconciliation())
            return
        if _marked_by_client(trade):
            return  # IB's error on a new order (or its cancel): `_on_order_error` records it, with IB's words
        self._sink(self._order_report(trade, at=datetime.now(UTC)))

    def _on_open_order(self, trade) -> None:
        order = trade.order
        awaited = self._modifies_sent.get(order.orderId) if order.clientId == self.client_id else None
        if awaited is not None and translate.order_terms(order) == awaited.terms:
            del self._modifies_sent[order.orderId]  # the broker holds the new terms: confirmed

    def _on_exec(self, trade, fill) -> None:
        self._sink(translate.execution(fill))

    def _on_commission(self, trade, fill, report) -> None:
        commission = translate.commission(report)
        if commission:
            self._sink(commission)

    def _on_tickers(self, tickers) -> None:
        now = datetime.now(UTC)
        mono = time.monotonic()
        for ticker in tickers:
            con_id = ticker.contract.conId if ticker.contract else 0
            sub = self._subscriptions.get(con_id)
            if sub is None or ticker is not sub.ticker:
                continue
            q = translate.quote(ticker, received_at=now)
            self._quotes[con_id] = q
            sub.last_tick_monotonic = mono
            sub.stale = False
            for listener in list(self._quote_listeners):
                try:
                    listener(q)
                except Exception:
                    logger.exception("quote listener failed")

    async def _watch_subscriptions(self) -> None:
        """Flag subscriptions that stopped ticking and subscribe them again."""
        while True:
            await asyncio.sleep(min(1.0, self.stale_after_s / 2))
            if self.state != "connected":
                continue
            now = time.monotonic()
            for sub in self._subscriptions.values():
                if sub.lined and now - sub.last_tick_monotonic > self.stale_after_s:
                    if not sub.stale:
                        logger.warning("quote subscription %s is stale; resubscribing", sub.contract.symbol)
                    sub.stale = True
                    self._resubscribe(sub)

    def _resubscribe(self, sub: _Subscription) -> None:
        contract = translate.to_ib_contract(sub.contract)
        if sub.ticker is not None:
            try:
                self.ib.cancelMktData(sub.ticker.contract)
            except Exception:  # already gone at the gateway
                logger.debug("cancelMktData failed during resubscribe", exc_info=True)
        sub.ticker = self.ib.reqMktData(contract)
        sub.last_tick_monotonic = time.monotonic()

    # -- calls from other threads ----------------------------------------------------------
    def _loop_or_raise(self, require_connected: bool) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or not loop.is_running() or (require_connected and self.state not in ("connected",)):
            raise BrokerUnavailable(
                f"The broker is not connected ({self.state}).",
                details={"state": self.state, "last_error": self.last_error},
            )
        return loop

    def _translated(self, exc: BaseException, timeout: float) -> Exception | None:
        """The GatewayError a failed call raises instead of `exc` (None: not a broker failure)."""
        if isinstance(exc, TimeoutError | FutureTimeout):
            return BrokerUnavailable(
                f"The broker did not answer within {timeout:g}s.",
                code=ErrorCode.BROKER_TIMEOUT,
                details={"timeout_s": timeout},
            )
        if isinstance(exc, RequestError):
            from brokers.ib.errors import translate_request_error

            return translate_request_error(exc)
        if isinstance(exc, ConnectionError):
            return BrokerUnavailable(f"The broker connection failed: {exc}")
        return None

    def call(
        self,
        fn: Callable[[IB], Awaitable[T]],
        *,
        timeout: float | None = None,
        require_connected: bool = True,
        urgent: bool = False,
    ) -> T:
        """Run `fn(ib)` on the worker loop; bounded by `timeout` (default: IB_REQUEST_TIMEOUT).

        `urgent`: on an order's behalf, its messages go ahead of queued reads (`brokers.ib.pacing`).
        Raises BrokerUnavailable at once when not connected, `broker_timeout` (504) when IB
        does not answer in time, and translated errors for IB request errors.
        """
        loop = self._loop_or_raise(require_connected)
        timeout = timeout or self.request_timeout

        async def run() -> T:
            with pacing.urgent() if urgent else contextlib.nullcontext():
                return await asyncio.wait_for(fn(self.ib), timeout)

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(timeout + 1)
        except (TimeoutError, FutureTimeout, RequestError, ConnectionError) as exc:
            if isinstance(exc, TimeoutError | FutureTimeout):
                future.cancel()
            raise self._translated(exc, timeout) from None

    async def acall(
        self, fn: Callable[[IB], Awaitable[T]], *, timeout: float | None = None, require_connected: bool = True
    ) -> T:
        """`call()` for another event loop (the web server's): awaits the answer instead of blocking a thread."""
        loop = self._loop_or_raise(require_connected)
        timeout = timeout or self.request_timeout

        async def run() -> T:
            return await asyncio.wait_for(fn(self.ib), timeout)

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout + 1)
        except (TimeoutError, FutureTimeout, RequestError, ConnectionError) as exc:
            if isinstance(exc, TimeoutError | FutureTimeout):
                future.cancel()
            raise self._translated(exc, timeout) from None

    def run_soon(self, fn: Callable[[IB], Any]) -> None:
        """Fire-and-forget a synchronous `fn(ib)` on the loop (subscription bookkeeping)."""
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(fn, self.ib)

    # -- market data subscriptions (called on the loop through call()/run_soon) ------------
    def subscribe_on_loop(self, contract: ContractInfo) -> None:
        sub = self._subscriptions.get(contract.con_id)
        if sub is None:
            sub = self._subscriptions[contract.con_id] = _Subscription(contract=contract)
            if self.lines_in_use < self.stream_budget():
                self._take_line(sub)
            else:
                logger.warning(
                    "all %d market-data lines for streams are in use (%d of them by other connections): "
                    "%s waits for one to come free",
                    self.stream_lines,
                    min(self.lines_elsewhere, self.stream_lines),
                    contract.symbol,
                )
        sub.watchers += 1

    def unsubscribe_on_loop(self, con_id: int) -> None:
        sub = self._subscriptions.get(con_id)
        if sub is None:
            return
        sub.watchers -= 1
        if sub.watchers <= 0:
            del self._subscriptions[con_id]
            self._quotes.pop(con_id, None)
            if sub.ticker is not None and self.ib.isConnected():
                self.ib.cancelMktData(sub.ticker.contract)
            if sub.lined:
                self.lines_in_use -= 1
                self._grant_waiting()

    def lines_elsewhere_on_loop(self, lines: int) -> None:
        """The other connections' lines changed: waiting streams take what came free (none are dropped
        when the others took more: IB answers a line too many with error 101, and the stream waits)."""
        self.lines_elsewhere = max(0, lines)
        self._grant_waiting()

    def stream_budget(self) -> int:
        """Lines this connection's streams may hold now: the configured ones less what the others hold."""
        return max(0, self.stream_lines - self.lines_elsewhere)

    def _grant_waiting(self) -> None:
        for sub in list(self._subscriptions.values()):
            if self.lines_in_use >= self.stream_budget():
                return
            if not sub.lined:
                self._take_line(sub)

    def _take_line(self, sub: _Subscription) -> None:
        sub.lined = True
        self.lines_in_use += 1
        sub.last_tick_monotonic = time.monotonic()
        if self.ib.isConnected():
            sub.ticker = self.ib.reqMktData(translate.to_ib_contract(sub.contract))

    def stream_lines_free(self) -> int:
        """Lines a new stream could take now (read from any thread: a moment's view, the loop decides)."""
        return max(0, self.stream_budget() - self.lines_in_use)

    def streaming(self, con_id: int) -> bool:
        return con_id in self._subscriptions

    def cached_quote(self, con_id: int) -> Quote | None:
        return self._quotes.get(con_id)

    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def watchers(self, con_id: int) -> int:
        sub = self._subscriptions.get(con_id)
        return sub.watchers if sub else 0

    def add_quote_listener(self, listener: Callable[[Quote], None]) -> None:
        """`listener(quote)` runs on the worker loop for every tick: it must not block."""
        self._quote_listeners.append(listener)

    def remove_quote_listener(self, listener: Callable[[Quote], None]) -> None:
        if listener in self._quote_listeners:
            self._quote_listeners.remove(listener)

    def health(self) -> BrokerHealth:
        return BrokerHealth(
            state=self.state,
            gateway=f"{self.host}:{self.port}",
            client_id=self.client_id,
            server_version=self.server_version if self.state == "connected" else None,
            accounts=self.accounts,
            connected_since=self.connected_since,
            down_since=self.down_since,
            last_error=self.last_error,
            down_reason=self.down_reason,
            reconnects=self.reconnects,
            reconciled=self.reconciled.is_set(),
            stale_subscriptions=tuple(s.contract.symbol for s in list(self._subscriptions.values()) if s.stale),
            stream_lines=self.stream_lines,
            stream_lines_in_use=self.lines_in_use,
            stream_lines_elsewhere=self.lines_elsewhere,
            streams_waiting=len(self._subscriptions) - self.lines_in_use,
        )
