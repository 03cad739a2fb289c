"""IbAdapter: the production BrokerAdapter, marshalling every call onto the IB worker thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal

from django.conf import settings
from ib_async import IB, Order, OrderStatus
from ib_async.wrapper import RequestError

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
from brokers.ib import pacing, translate
from brokers.ib.errors import HISTORICAL_PACING_RETRY_S, is_no_market_data_permission
from brokers.ib.worker import IbWorker
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError

logger = logging.getLogger(__name__)

DELAYED = 3
# IB statuses of an order the broker has taken (its permanent id then stands for that).
_TAKEN = frozenset({"PreSubmitted", "Submitted", "PendingCancel", "Filled"})
# IB's historical-data pacing: at most 60 requests in any 10 minutes.
HISTORICAL_WINDOW_S, HISTORICAL_MAX_REQUESTS = 600, 60
# Account values ib_async keeps from the account updates it subscribes to at connect (AccountRisk).
STREAMED_ACCOUNT_TAGS = ("AvailableFunds", "NetLiquidation", "TotalCashValue")


def _float(d: Decimal | None) -> float | None:
    return None if d is None else float(d)


def _ib_order(request: BrokerOrderRequest, *, what_if: bool = False) -> Order:
    translate.refuse_unsafe_fields(
        "order",
        action=request.action,
        order_type=request.order_type,
        tif=request.tif,
        order_ref=request.order_ref,
        account=request.account,
        oca_group=request.oca_group,
    )
    order = Order(
        action=request.action,
        totalQuantity=float(request.quantity),
        orderType=request.order_type,
        tif=request.tif,
        # A preview carries no orderRef, so nothing at the broker can be mistaken for the real order later.
        orderRef="" if what_if else request.order_ref,
        account=request.account,
        outsideRth=request.outside_rth,
        transmit=request.transmit,
        whatIf=what_if,
    )
    if request.limit_price is not None:
        order.lmtPrice = float(request.limit_price)
    if request.order_type in ("STP", "STP LMT") and request.stop_price is not None:
        order.auxPrice = float(request.stop_price)
    if request.order_type in ("TRAIL", "TRAIL LIMIT"):
        if request.trail_amount is not None:
            order.auxPrice = float(request.trail_amount)
        if request.trail_percent is not None:
            order.trailingPercent = float(request.trail_percent)
        if request.stop_price is not None:
            order.trailStopPrice = float(request.stop_price)
    if request.oca_group:
        order.ocaGroup, order.ocaType = request.oca_group, 1
    if request.parent_broker_order_id:
        order.parentId = request.parent_broker_order_id
    if request.broker_order_id:
        order.orderId = request.broker_order_id
    return order


def _require_modifiable(ib: IB, broker_order_id: int, client_id: int) -> None:
    """IB can only change a working order; ib_async asserts on a finished one, so say it plainly."""
    for trade in ib.trades():
        if trade.order.orderId == broker_order_id and trade.order.clientId == client_id:
            if trade.orderStatus.status in OrderStatus.DoneStates:
                raise GatewayError(
                    ErrorCode.ORDER_NOT_MODIFIABLE,
                    f"The broker reports this order as {trade.orderStatus.status}; it can no longer be modified.",
                    http_status=409,
                    details={"broker_status": trade.orderStatus.status},
                )
            return


class IbAdapter:
    def __init__(self, worker: IbWorker) -> None:
        self.worker = worker
        self._historical_times: deque[float] = deque()
        self._historical_lock = threading.Lock()
        self._account_memo: dict[tuple[str, str], tuple[int, object]] = {}

    def health(self) -> BrokerHealth:
        return self.worker.health()

    def managed_accounts(self) -> tuple[str, ...]:
        return self.worker.accounts

    # -- contracts and market data -----------------------------------------------------------
    def resolve_contracts(self, *, spec: ContractSpec, for_order: bool = False) -> list[ContractInfo]:
        async def run(ib: IB) -> list[ContractInfo]:
            details = await ib.reqContractDetailsAsync(translate.to_ib_contract(spec))
            return [translate.contract_info(d.contract, d) for d in details if d.contract]

        return self.worker.call(run, urgent=for_order)

    def _snapshot_fn(self, contract: ContractInfo):
        async def run(ib: IB) -> Quote:
            ib_contract = translate.to_ib_contract(contract)
            try:
                (ticker,) = await ib.reqTickersAsync(ib_contract)
            except RequestError as exc:
                fallback = settings.DELAYED_DATA_FALLBACK and self.worker.market_data_type < DELAYED
                if not is_no_market_data_permission(exc) or not fallback:
                    raise
                # No live permission: fall back to delayed data; the quote says so in market_data_type.
                ib.reqMarketDataType(DELAYED)
                try:
                    (ticker,) = await ib.reqTickersAsync(ib_contract)
                finally:
                    ib.reqMarketDataType(self.worker.market_data_type)
            return translate.quote(ticker)

        return run

    def quote_snapshot(self, *, contract: ContractInfo, for_order: bool = False) -> Quote:
        return self.worker.call(self._snapshot_fn(contract), urgent=for_order)

    async def quote_snapshot_async(self, *, contract: ContractInfo) -> Quote:
        """`quote_snapshot` awaited from another event loop (the web server's)."""
        return await self.worker.acall(self._snapshot_fn(contract))

    def quote_subscribe(self, *, contract: ContractInfo) -> None:
        self.worker.run_soon(lambda ib: self.worker.subscribe_on_loop(contract))

    def quote_unsubscribe(self, *, con_id: int) -> None:
        self.worker.run_soon(lambda ib: self.worker.unsubscribe_on_loop(con_id))

    def quote_streams_without_line(self, *, con_ids: list[int]) -> list[int]:
        free = self.worker.stream_lines_free()
        new = [con_id for con_id in dict.fromkeys(con_ids) if not self.worker.streaming(con_id)]
        return new[free:]

    def quote_cached(self, *, con_id: int) -> Quote | None:
        return self.worker.cached_quote(con_id)

    def _historical_slot(self) -> None:
        with self._historical_lock:
            now = time.monotonic()
            while self._historical_times and now - self._historical_times[0] > HISTORICAL_WINDOW_S:
                self._historical_times.popleft()
            if len(self._historical_times) >= HISTORICAL_MAX_REQUESTS:
                retry = int(HISTORICAL_WINDOW_S - (now - self._historical_times[0])) + 1
                raise GatewayError(
                    ErrorCode.PACING_VIOLATION,
                    "Historical data pacing limit reached.",
                    http_status=429,
                    details={"retry_after_s": retry},
                )
            self._historical_times.append(now)

    def bars(
        self, *, contract: ContractInfo, bar_size: str, duration: str, what_to_show: str, use_rth: bool
    ) -> list[Bar]:
        translate.refuse_unsafe_fields("historical", bar_size=bar_size, duration=duration, what_to_show=what_to_show)
        self._historical_slot()

        async def run(ib: IB) -> list[Bar]:
            bars = await ib.reqHistoricalDataAsync(
                translate.to_ib_contract(contract),
                endDateTime="",
                durationStr=duration,
                barSizeSetting=bar_size,
                whatToShow=what_to_show,
                useRTH=use_rth,
                formatDate=2,
                timeout=0,
            )
            return [translate.bar(b) for b in bars]

        try:
            return self.worker.call(run)
        except GatewayError as exc:
            if exc.code == ErrorCode.PACING_VIOLATION:
                exc.details.setdefault("retry_after_s", HISTORICAL_PACING_RETRY_S)
            if exc.details.get("ib_code") == 162 and "returned no data" in str(exc.details.get("ib_message", "")):
                return []  # IB has no bars in that window (market closed, outside RTH): an empty answer
            raise

    # -- account -------------------------------------------------------------------------------
    # Account reads are answered from ib_async's memory on the worker loop. The result is kept with
    # the worker's account version at the time; while IB reports no change (and the connection stays
    # up) the next read returns it without crossing to the worker thread.
    def _memo(self, key: tuple[str, str]):
        hit = self._account_memo.get(key)
        if hit is not None and hit[0] == self.worker.account_version and self.worker.state == "connected":
            return hit[1]
        return None

    def _remember(self, key: tuple[str, str], fn):
        async def run(ib: IB):
            version = self.worker.account_version
            result = await fn(ib)
            if version == self.worker.account_version:
                self._account_memo[key] = (version, result)
            return result

        return run

    def _summary_fn(self, account: str):
        translate.refuse_unsafe_fields("account", account=account)

        async def run(ib: IB) -> AccountSummary:
            values = await ib.accountSummaryAsync(account)
            return AccountSummary(
                account=account, values=tuple(translate.account_value(v) for v in values if v.account == account)
            )

        return self._remember(("summary", account), run)

    def _positions_fn(self, account: str):
        translate.refuse_unsafe_fields("account", account=account)

        async def run(ib: IB) -> tuple[PositionInfo, ...]:
            portfolio = {p.contract.conId: p for p in ib.portfolio(account)}
            result = []
            for p in ib.positions(account):
                if p.position == 0:
                    continue
                result.append(translate.position(portfolio.get(p.contract.conId, p)))
            return tuple(result)

        return self._remember(("positions", account), run)

    def account_summary(self, *, account: str) -> AccountSummary:
        memo = self._memo(("summary", account))
        return memo if memo is not None else self.worker.call(self._summary_fn(account))

    async def account_summary_async(self, *, account: str) -> AccountSummary:
        memo = self._memo(("summary", account))
        return memo if memo is not None else await self.worker.acall(self._summary_fn(account))

    def positions(self, *, account: str) -> list[PositionInfo]:
        memo = self._memo(("positions", account))
        return list(memo if memo is not None else self.worker.call(self._positions_fn(account)))

    async def positions_async(self, *, account: str) -> list[PositionInfo]:
        memo = self._memo(("positions", account))
        return list(memo if memo is not None else await self.worker.acall(self._positions_fn(account)))

    def _pnl_fn(self, account: str):
        translate.refuse_unsafe_fields("account", account=account)

        async def run(ib: IB) -> PnLInfo:
            existing = [p for p in ib.pnl(account) if p.account == account]
            if existing:
                return translate.pnl(account, existing[0])
            p = ib.reqPnL(account)
            for _ in range(200):  # first value arrives shortly after subscribing
                if translate.dec(p.dailyPnL) is not None or translate.dec(p.unrealizedPnL) is not None:
                    break
                await asyncio.sleep(0.01)
            return translate.pnl(account, p)

        return self._remember(("pnl", account), run)

    def pnl(self, *, account: str) -> PnLInfo:
        memo = self._memo(("pnl", account))
        return memo if memo is not None else self.worker.call(self._pnl_fn(account))

    async def pnl_async(self, *, account: str) -> PnLInfo:
        memo = self._memo(("pnl", account))
        return memo if memo is not None else await self.worker.acall(self._pnl_fn(account))

    # -- orders --------------------------------------------------------------------------------
    def order_preview(self, *, request: BrokerOrderRequest) -> OrderPreview:
        async def run(ib: IB) -> OrderPreview:
            state = await ib.whatIfOrderAsync(
                translate.to_ib_contract(request.contract), _ib_order(request, what_if=True)
            )
            if not state or isinstance(state, list):
                raise GatewayError(ErrorCode.BROKER_ERROR, "The broker returned no preview.", http_status=502)
            return translate.preview(state)

        return self.worker.call(run)

    def order_place(self, *, request: BrokerOrderRequest, on_ack: Callable[[OrderAck], None] | None = None) -> OrderAck:
        async def run(ib: IB) -> OrderAck:
            # Checked on the IB thread, where the kill switch closes the latch before its global cancel.
            if self.worker.sends_blocked:
                raise GatewayError(
                    ErrorCode.TRADING_HALTED,
                    "Trading is halted: the broker connection accepts no new order or modification.",
                    http_status=423,
                    details={"gate": "kill_switch"},
                )
            if request.connection and request.connection != self.worker.connection_id:
                # Checked on the IB thread, where the connection changes: a bracket never straddles two.
                raise BrokerUnavailable(
                    "The connection this bracket's entry went out on was lost; its other legs are not sent "
                    "on a new one.",
                    details={"state": self.worker.state},
                )
            if request.broker_order_id:
                _require_modifiable(ib, request.broker_order_id, self.worker.client_id)
            order = _ib_order(request)
            trade = ib.placeOrder(translate.to_ib_contract(request.contract), order)
            if request.broker_order_id:
                self.worker.modify_sent(trade.order.orderId, order)
            ack = OrderAck(
                broker_order_id=trade.order.orderId,
                perm_id=trade.order.permId or None,
                status=trade.orderStatus.status,
                client_id=self.worker.client_id,
                connection=self.worker.connection_id,
            )
            if on_ack is not None:
                # Here on the IB thread, before this thread reads the broker's answer: whatever the caller
                # queues for the ledger now precedes the order's statuses and fills.
                try:
                    on_ack(ack)
                except Exception:
                    logger.exception("order %s: acknowledgement callback failed", ack.broker_order_id)
            return ack

        return self.worker.call(run, urgent=True)

    def order_perm_id(self, *, broker_order_id: int) -> int | None:
        # Read from the caller's thread: one dict lookup and two attributes of ib_async's state, each
        # atomic; at worst the id arrives just after and the broker's report records it instead. Only
        # for an order the broker took: a refused one's id comes with the report of its refusal.
        ib = self.worker.ib
        trade = ib.wrapper.trades.get((self.worker.client_id, broker_order_id)) if ib is not None else None
        if trade is None or trade.orderStatus.status not in _TAKEN:
            return None
        return trade.order.permId or None

    @property
    def client_id(self) -> int:
        return self.worker.client_id

    def order_cancel(self, *, broker_order_id: int) -> None:
        """Cancel an order this IB client placed (order ids are only unique per client id)."""

        async def run(ib: IB) -> None:
            self.worker.cancels_sending([broker_order_id])
            for trade in ib.openTrades():
                if trade.order.orderId == broker_order_id and trade.order.clientId == self.worker.client_id:
                    ib.cancelOrder(trade.order)
                    break
            else:
                # Our own client id, not in this session's trades (e.g. placed before a restart).
                ib.client.cancelOrder(broker_order_id, "")
            self.worker.cancel_sent(broker_order_id)  # after ib_async's own (local) status change

        self.worker.call(run, urgent=True)

    def orders_cancel_all(self) -> None:
        async def run(ib: IB) -> None:
            own = self.worker.client_id
            self.worker.cancels_sending(t.order.orderId for t in ib.openTrades() if t.order.clientId == own)
            with pacing.immediately():  # the kill switch's cancel waits behind nothing
                ib.reqGlobalCancel()

        self.worker.call(run, urgent=True)

    def order_sends_blocked(self, *, blocked: bool) -> None:
        async def run(ib: IB) -> None:
            self.worker.sends_blocked = blocked
            if blocked:  # and what passed the latch before it closed but still waits to be sent, never is
                self.worker.withdraw_unsent_orders()

        # Also while disconnected: the latch must hold when the connection comes back.
        self.worker.call(run, require_connected=False)

    def open_orders(self) -> tuple[BrokerOrderStatus, ...]:
        async def run(ib: IB) -> tuple[BrokerOrderStatus, ...]:
            async with self.worker.orders_request:
                trades = await ib.reqAllOpenOrdersAsync()
            # Only this client hears status changes of its own orders: other clients' trades kept from an
            # earlier request would stay "open" forever, so for those trust only the fresh answer.
            own = [t for t in ib.openTrades() if t.order.clientId == self.worker.client_id]
            seen = {}
            for trade in [*trades, *own]:
                if trade.orderStatus.status in OrderStatus.DoneStates or trade.order.whatIf:
                    continue
                seen[(trade.order.permId or None, trade.order.clientId, trade.order.orderId)] = trade
            return tuple(translate.order_status(t) for t in seen.values())

        return self.worker.call(run, urgent=True)  # the kill switch's sweep asks

    def account_risk(self, *, account: str) -> AccountRisk:
        # Read before every order: while IB reports no account change it is answered from memory.
        memo = self._memo(("risk", account))
        if memo is not None:
            return memo

        async def run(ib: IB) -> AccountRisk:
            # The rows in the account's currency: IB also sends some tags per currency and as "BASE".
            figures: dict[str, Decimal | None] = dict.fromkeys(STREAMED_ACCOUNT_TAGS)
            currency = ""
            for value in ib.accountValues(account):
                if value.tag in figures and value.currency not in ("", "BASE"):
                    figures[value.tag], currency = translate.dec(value.value), value.currency
            positions = tuple(
                (p.contract.conId, translate.dec(p.position) or Decimal(0)) for p in ib.positions(account)
            )
            return AccountRisk(
                account=account,
                available_funds=figures["AvailableFunds"],
                currency=currency,
                positions=positions,
                net_liquidation=figures["NetLiquidation"],
                cash=figures["TotalCashValue"],
            )

        return self.worker.call(self._remember(("risk", account), run))

    def snapshot(self) -> BrokerSnapshot:
        return self.worker.call(lambda ib: self.worker.broker_snapshot())

    def orders_recheck(self) -> None:
        self.worker.run_soon(lambda ib: self.worker.recheck())
