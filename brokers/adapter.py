"""The broker interface the rest of the project sees, and the plain data that crosses threads.

Nothing outside `brokers/ib/` imports ib_async. Everything here is a frozen dataclass of
`Decimal`, `int`, `str` and timezone-aware UTC `datetime`, so it can be queued between threads
or, later, sent over a channel layer to the process that owns the IB connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """What a caller asks for; may match zero, one or several contracts."""

    symbol: str = ""
    sec_type: str = "STK"
    exchange: str = ""
    currency: str = ""
    primary_exchange: str = ""
    expiry: str = ""
    strike: Decimal | None = None
    right: str = ""
    multiplier: str = ""
    con_id: int | None = None
    local_symbol: str = ""
    trading_class: str = ""


@dataclass(frozen=True, slots=True)
class ContractInfo:
    """One resolved contract, identified by its conId."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    primary_exchange: str = ""
    expiry: str = ""
    strike: Decimal | None = None
    right: str = ""
    multiplier: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    long_name: str = ""
    min_tick: Decimal | None = None
    time_zone: str = ""
    trading_hours: str = ""
    liquid_hours: str = ""
    min_size: Decimal | None = None  # the smallest order the broker takes (None: not reported)
    size_increment: Decimal | None = None  # order sizes go in steps of this (None: not reported)


@dataclass(frozen=True, slots=True)
class Quote:
    con_id: int
    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    last_size: Decimal | None
    volume: Decimal | None
    close: Decimal | None
    high: Decimal | None
    low: Decimal | None
    time: datetime | None
    market_data_type: int
    received_at: datetime | None = None
    # Options: the broker's model greeks, when it sends them (None otherwise).
    implied_vol: Decimal | None = None
    delta: Decimal | None = None
    gamma: Decimal | None = None
    vega: Decimal | None = None
    theta: Decimal | None = None
    underlying_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Bar:
    time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal | None
    wap: Decimal | None
    count: int | None


@dataclass(frozen=True, slots=True)
class AccountValue:
    tag: str
    value: str
    currency: str


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account: str
    values: tuple[AccountValue, ...]


@dataclass(frozen=True, slots=True)
class PositionInfo:
    account: str
    contract: ContractInfo
    quantity: Decimal
    average_cost: Decimal | None
    market_price: Decimal | None = None
    market_value: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    realized_pnl: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PnLInfo:
    account: str
    daily_pnl: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal | None


@dataclass(frozen=True, slots=True)
class BrokerOrderRequest:
    """An order as the broker receives it; `order_ref` carries our client_order_id."""

    contract: ContractInfo
    account: str
    action: str  # BUY or SELL (SELL_SHORT/BUY_TO_COVER are mapped before this point)
    quantity: Decimal
    order_type: str  # IB names: MKT, LMT, STP, STP LMT, MOC, LOC, TRAIL, TRAIL LIMIT
    tif: str
    order_ref: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    outside_rth: bool = False
    oca_group: str = ""
    parent_broker_order_id: int | None = None
    transmit: bool = True
    broker_order_id: int | None = None  # set to modify a working order
    # A bracket's later leg goes out only on the connection its entry went out on (`OrderAck.connection`):
    # on another one, the entry's group may be gone or held with prices that are no longer current.
    connection: str = ""


@dataclass(frozen=True, slots=True)
class OrderPreview:
    commission: Decimal | None
    min_commission: Decimal | None
    max_commission: Decimal | None
    commission_currency: str
    init_margin_change: Decimal | None
    maint_margin_change: Decimal | None
    equity_with_loan_change: Decimal | None
    init_margin_after: Decimal | None
    maint_margin_after: Decimal | None
    equity_with_loan_after: Decimal | None
    warning: str = ""


@dataclass(frozen=True, slots=True)
class OrderAck:
    broker_order_id: int
    perm_id: int | None
    status: str  # IB status at acknowledgement time
    client_id: int  # order ids are per IB client id: only this client may modify or cancel it
    connection: str = ""  # the broker connection it went out on (a new one after every reconnect)


@dataclass(frozen=True, slots=True)
class BrokerOrderStatus:
    """An order status report from the broker (live or from reconciliation)."""

    order_ref: str
    broker_order_id: int
    perm_id: int | None
    client_id: int | None
    status: str  # IB status: PendingSubmit, PreSubmitted, Submitted, Filled, Cancelled, Inactive, ...
    filled: Decimal
    remaining: Decimal | None
    average_fill_price: Decimal | None
    reason: str = ""
    error_code: int | None = None
    # IB's error stopped the order before the broker ever reported it working: it refused a new order.
    refused: bool = False
    at: datetime | None = None
    # The terms the broker holds (reconciliation snapshots only; None in live reports).
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    # A working order whose latest modification IB refused (`error_code`, `reason`): the terms above are the
    # broker's answer to it, even for a modification made on this connection (reconciliation snapshots only).
    change_refused: bool = False


@dataclass(frozen=True, slots=True)
class BrokerOrderWithdrawn:
    """A new order the kill switch took back before it left the gateway (it waited for IB's message
    budget): the broker never received it."""

    order_ref: str
    broker_order_id: int
    client_id: int
    at: datetime


@dataclass(frozen=True, slots=True)
class BrokerExecution:
    exec_id: str
    order_ref: str
    broker_order_id: int | None
    perm_id: int | None
    account: str
    con_id: int | None
    symbol: str
    side: str  # BOT or SLD
    quantity: Decimal
    price: Decimal
    executed_at: datetime
    exchange: str = ""
    client_id: int | None = None  # the IB client that placed the order (0 or None: not reported)


@dataclass(frozen=True, slots=True)
class BrokerCommission:
    exec_id: str
    commission: Decimal
    currency: str
    realized_pnl: Decimal | None


@dataclass(frozen=True, slots=True)
class AccountRisk:
    """The account as the connection already streams it (account values and positions), in the
    account's currency: the buying-power check reads it per order, the account snapshots per
    interval, and neither sends the broker a request for it."""

    account: str
    available_funds: Decimal | None
    currency: str
    positions: tuple[tuple[int, Decimal], ...] = ()  # (con_id, signed quantity)
    net_liquidation: Decimal | None = None
    cash: Decimal | None = None  # total cash value

    def position(self, con_id: int) -> Decimal:
        for held_con_id, quantity in self.positions:
            if held_con_id == con_id:
                return quantity
        return Decimal(0)


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """Everything reconciliation needs: the broker's view of orders and executions."""

    orders: tuple[BrokerOrderStatus, ...]
    executions: tuple[BrokerExecution, ...]
    commissions: tuple[BrokerCommission, ...]
    taken_at: datetime
    # When the connection the snapshot came through was made: orders acknowledged before it that the
    # broker reports neither working nor completed are no longer held by the broker.
    session_started: datetime | None = None
    connection: str = ""  # the connection it came through (`OrderAck.connection`)
    # Orders (by orderRef) whose modification on this connection the broker did not confirm in time, and when the
    # broker was asked: their terms are recorded as the broker holds them.
    unconfirmed: tuple[str, ...] = ()
    asked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BrokerConnectionChanged:
    connected: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    state: str  # connecting, connected, reconnecting, down, stopped
    gateway: str
    client_id: int
    server_version: int | None
    accounts: tuple[str, ...]
    connected_since: datetime | None
    down_since: datetime | None
    last_error: str
    reconnects: int
    reconciled: bool
    down_reason: str = ""  # refused, login_pending, client_id_in_use, connection_lost, gateway_lost_ib_servers
    stale_subscriptions: tuple[str, ...] = field(default_factory=tuple)
    stream_lines: int = 0  # market-data lines streams may hold (IB_MARKET_DATA_LINES less the reserve)
    stream_lines_in_use: int = 0
    stream_lines_elsewhere: int = 0  # held by the deployment's other IB connections (see brokers.services)
    streams_waiting: int = 0  # streams asked for while every line was in use: they get the next free one


def as_dict(obj) -> dict:
    """A frozen dataclass of this module as a flat dict (nested dataclasses stay objects)."""
    return {name: getattr(obj, name) for name in obj.__slots__}


class BrokerAdapter(Protocol):
    """What services may ask of the broker. Every call is bounded by a timeout and raises
    `BrokerUnavailable` (503 broker_unavailable / 504 broker_timeout) instead of hanging."""

    def health(self) -> BrokerHealth: ...

    def managed_accounts(self) -> tuple[str, ...]: ...

    def resolve_contracts(self, *, spec: ContractSpec, for_order: bool = False) -> list[ContractInfo]:
        """`for_order`: an order waits on it, so its request goes ahead of queued reads."""
        ...

    def quote_snapshot(self, *, contract: ContractInfo, for_order: bool = False) -> Quote:
        """`for_order`: an order's price checks wait on it, so its request goes ahead of queued reads."""
        ...

    def quote_subscribe(self, *, contract: ContractInfo) -> None: ...

    def quote_streams_without_line(self, *, con_ids: list[int]) -> list[int]:
        """Those of `con_ids` not streamed yet that would find no free market-data line now (in order; a
        moment's view: the connection's own count decides, and a stream without a line waits for one)."""
        ...

    def quote_unsubscribe(self, *, con_id: int) -> None: ...

    def quote_cached(self, *, con_id: int) -> Quote | None: ...

    def bars(
        self, *, contract: ContractInfo, bar_size: str, duration: str, what_to_show: str, use_rth: bool
    ) -> list[Bar]: ...

    def account_summary(self, *, account: str) -> AccountSummary: ...

    def positions(self, *, account: str) -> list[PositionInfo]: ...

    def pnl(self, *, account: str) -> PnLInfo: ...

    def order_preview(self, *, request: BrokerOrderRequest) -> OrderPreview: ...

    def order_place(self, *, request: BrokerOrderRequest, on_ack: Callable[[OrderAck], None] | None = None) -> OrderAck:
        """Hand the order to the broker connection and return its acknowledgement.

        `on_ack`, if given, is called with the acknowledgement the moment the order is handed over,
        before any report of the broker about it is published: what the caller queues for the ledger
        there comes before the order's statuses and fills. It must be quick and must not raise."""
        ...

    def order_perm_id(self, *, broker_order_id: int) -> int | None:
        """IB's permanent id for an order this client placed, if the broker has reported it yet (no round trip)."""
        ...

    @property
    def client_id(self) -> int: ...

    def order_cancel(self, *, broker_order_id: int) -> None: ...

    def orders_cancel_all(self) -> None: ...

    def order_sends_blocked(self, *, blocked: bool) -> None:
        """Close (or open) the connection to new orders and modifications; cancels still pass.
        The kill switch closes it on the IB thread before its global cancel, so no order can
        reach the broker after the cancel that should have caught it."""
        ...

    def open_orders(self) -> tuple[BrokerOrderStatus, ...]:
        """Every order working at the broker, of every client id the connection can see."""
        ...

    def account_risk(self, *, account: str) -> AccountRisk: ...

    def snapshot(self) -> BrokerSnapshot: ...

    def orders_recheck(self) -> None:
        """Have the broker's orders reconciled soon (behind what was sent before), without holding new
        orders back: after a send whose outcome is unknown. Returns at once."""
        ...
