"""Simulated IB Gateway: a TCP server speaking the TWS API socket protocol (v157–178).

Unmodified TWS API clients (ib_async, ib_insync) connect to it as to a real gateway.
It runs its own asyncio loop in a daemon thread; the public methods are thread-safe.

Universe (conIds are fixed; derived ones come from a hash of a stable key, so they
are identical across runs):

=========  =======================================  =========  ==============  =========
symbol     conId                                    secType    exchange        currency
=========  =======================================  =========  ==============  =========
AAPL       265598                                   STK        SMART/NASDAQ    USD
MSFT       272093                                   STK        SMART/NASDAQ    USD
TSLA       76792991                                 STK        SMART/NASDAQ    USD
NVDA       4815747                                  STK        SMART/NASDAQ    USD
SPY        756733                                   STK (ETF)  SMART/ARCA      USD
QQQ        320227571                                STK (ETF)  SMART/NASDAQ    USD
SHOP       195014116 / 195014132 (ambiguous)        STK        SMART/NYSE|TSE  USD / CAD
EUR.USD    12087792                                 CASH       IDEALPRO        USD
GBP.USD    12087797                                 CASH       IDEALPRO        USD
USD.JPY    15016059                                 CASH       IDEALPRO        JPY
SPX        416904                                   IND        CBOE            USD
NDX        416843                                   IND        NASDAQ          USD
BTC        479624278                                CRYPTO     PAXOS           USD
US-T       derived ("BOND:91282CLW9"), CUSIP 91282CLW9  BOND   SMART           USD
VFIAX      derived ("FUND:VFIAX")                   FUND       FUNDSERV        USD
ES, NQ     derived ("FUT:ES:YYYYMM"), next 4 quarterly expiries (3rd Friday)   CME
CL         derived ("FUT:CL:YYYYMM"), next 6 monthly expiries                  NYMEX
AAPL, SPY  options: derived ("OPT:SYM:YYYYMMDD:STRIKE:RIGHT"); next 4 Friday expiries,
           11 strikes (step 5) around the starting price, calls and puts, SMART, x100
=========  =======================================  =========  ==============  =========

Expiries are computed relative to today so they never expire; lists are sorted front
month first.  A ContFuture (secType CONTFUT) resolves to the front month.

Prices are a seeded random walk (``seed``): every ``tick_interval`` each instrument
moves by a few minimum ticks with probability 0.7; bid/ask straddle the last price
with a fixed spread in ticks.  Options are priced off their underlying.
``pause_market()`` freezes the walk (orders are still evaluated every interval, so
partial fills keep progressing); ``set_price()`` moves a price explicitly.

Orders (see book.py for details): MKT, LMT, STP, STP LMT, TRAIL, MOC, LOC; TIF DAY, GTC,
GTD, IOC, FOK, OPG.  **MOC/LOC rest until** ``market_close()`` is called, which makes the
current last price the close and fills them there (LOC only if the limit allows,
otherwise it is cancelled).  OPG orders rest until ``market_open()``.
**Partial fills**: a working order fills at most ``partial_fill_threshold`` per
evaluation (immediately on placement, then once per tick_interval and on each
``set_price``), so a large order completes in several executions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import messages as M
from .account import INIT_MARGIN, MAINT_MARGIN, Account, commission_for
from .book import OrderEngine, Reject, SimExecution, SimOrder
from .faults import Faults
from .market import (
    BAR_SIZES,
    Instrument,
    Market,
    format_bar_time,
    make_bars,
    parse_duration,
    parse_end,
    round_to_tick,
)
from .protocol import (
    MAX_SERVER_VERSION,
    MIN_SERVER_VERSION,
    ContractSpec,
    Cursor,
    ProtocolError,
    encode,
    parse_place_order,
    parse_version_range,
    read_frame,
)

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)

LIVE_TICKS = {"bid": 1, "ask": 2, "last": 4, "high": 6, "low": 7, "close": 9, "open": 14, "volume": 8, "time": 45}
DELAYED_TICKS = {
    "bid": 66,
    "ask": 67,
    "last": 68,
    "high": 72,
    "low": 73,
    "close": 75,
    "open": 76,
    "volume": 74,
    "time": 88,
}
CONNECTIVITY = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
}
NO_SECDEF = "No security definition has been found for the request"


# ---------------------------------------------------------------- public records


@dataclass(frozen=True)
class SimOrderRecord:
    client_id: int
    order_id: int
    perm_id: int | None
    con_id: int
    symbol: str
    sec_type: str
    action: str
    total_quantity: Decimal | None
    order_type: str
    lmt_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    order_ref: str
    what_if: bool
    outside_rth: bool
    received_at: datetime


@dataclass(frozen=True)
class SimCancelRecord:
    client_id: int
    order_id: int | None  # None for reqGlobalCancel
    received_at: datetime


@dataclass(frozen=True)
class OrderStateRecord:
    order_id: int
    client_id: int
    perm_id: int
    order_ref: str
    status: str
    filled: Decimal
    remaining: Decimal
    avg_fill_price: Decimal
    con_id: int
    action: str
    order_type: str
    total_quantity: Decimal


@dataclass(frozen=True)
class ExecutionRecord:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    order_ref: str
    con_id: int
    side: str  # BOT / SLD
    shares: Decimal
    price: Decimal
    time: datetime
    commission: Decimal
    realized_pnl: Decimal


# ---------------------------------------------------------------- per connection


@dataclass
class BarSub:
    inst: Instrument
    bar_s: int
    format_date: int
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(eq=False)  # identity hash: sessions live in a set
class Session:
    writer: asyncio.StreamWriter
    peer: str
    client_id: int | None = None
    version: int = 0
    md_type: int = 1
    mkt: dict[int, Instrument] = field(default_factory=dict)
    bars: dict[int, BarSub] = field(default_factory=dict)
    acct_updates: bool = False
    positions: bool = False
    multi: set[int] = field(default_factory=set)
    pos_multi: set[int] = field(default_factory=set)
    summary: dict[int, set[str]] = field(default_factory=dict)
    pnl: set[int] = field(default_factory=set)
    pnl_single: dict[int, int] = field(default_factory=dict)
    auto_bind: bool = False
    closed: bool = False

    def send(self, fields: list[Any]) -> None:
        if not self.closed:
            self.writer.write(encode(fields))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()


# ---------------------------------------------------------------- gateway


def _exchange_session_open(inst: Instrument, now: datetime) -> bool:
    from brokers.adapter import ContractInfo
    from brokers.hours import is_open

    contract = ContractInfo(
        con_id=inst.con_id,
        symbol=inst.symbol,
        sec_type=inst.sec_type,
        exchange=inst.exchange,
        currency=inst.currency,
        primary_exchange=inst.primary_exchange,
    )
    return is_open(contract, now)


class SimGateway:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 7,
        server_version: int = 178,
        account: str = "DU1234567",
        master_client_id: int | None = None,
        tick_interval: float = 0.25,
        partial_fill_threshold: Decimal | None = Decimal("500"),
        starting_cash: Decimal = Decimal("1000000"),
        trading_hours: str = "always",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not MIN_SERVER_VERSION <= server_version <= MAX_SERVER_VERSION:
            raise ValueError(f"server_version must be within {MIN_SERVER_VERSION}..{MAX_SERVER_VERSION}")
        self.host = host
        self.port = port
        self.seed = seed
        self.server_version = server_version
        self.account_code = account
        self.master_client_id = master_client_id
        self.tick_interval = tick_interval
        self.market = Market(seed)
        self.account = Account(account, self.market, Decimal(starting_cash))
        if trading_hours not in ("always", "exchange"):
            raise ValueError(f"trading_hours must be 'always' or 'exchange', not {trading_hours!r}")
        # "exchange": orders only fill while the instrument's exchange calendar says the market is open
        # (the same calendars the order gates use); outside_rth orders fill at any time.
        self.engine = OrderEngine(
            self.market,
            self.account,
            self,
            partial_fill_threshold,
            seed,
            session_open=_exchange_session_open if trading_hours == "exchange" else None,
            clock=clock or (lambda: datetime.now(UTC)),
        )
        self.faults = Faults(self)
        # Symbols this paper account has no live market-data subscription for: live/frozen requests get
        # error 354 as from IB; delayed data (types 3 and 4) still works.
        self.no_live_permission: set[str] = set()
        self.sessions: set[Session] = set()
        self._received: list[SimOrderRecord] = []
        self._cancels: list[SimCancelRecord] = []
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._cycle_no = 0
        self._handlers: dict[int, Callable[[Session, Cursor], None]] = {
            1: self._req_mkt_data,
            2: self._cancel_mkt_data,
            3: self._place_order,
            4: self._cancel_order,
            5: self._req_open_orders,
            6: self._req_account_updates,
            7: self._req_executions,
            8: self._req_ids,
            9: self._req_contract_details,
            15: self._req_auto_open_orders,
            16: self._req_all_open_orders,
            17: self._req_managed_accounts,
            20: self._req_historical,
            25: self._cancel_historical,
            49: self._req_current_time,
            58: self._req_global_cancel,
            59: self._req_market_data_type,
            61: self._req_positions,
            62: self._req_account_summary,
            63: self._cancel_account_summary,
            64: self._cancel_positions,
            74: self._req_positions_multi,
            75: self._cancel_positions_multi,
            76: self._req_account_updates_multi,
            77: self._cancel_account_updates_multi,
            78: self._req_sec_def_opt_params,
            81: self._req_matching_symbols,
            87: self._req_head_timestamp,
            92: self._req_pnl,
            93: self._cancel_pnl,
            94: self._req_pnl_single,
            95: self._cancel_pnl_single,
            99: self._req_completed_orders,
        }

    # ------------------------------------------------------------ lifecycle
    def start(self) -> SimGateway:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
                self._spawn(self._ticker())
            except BaseException as exc:  # report bind errors to start()
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"ibsim-{self.port}", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise errors[0]
        log.info("ibsim listening on %s:%s (server version %s)", self.host, self.port, self.server_version)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        except Exception:  # noqa: BLE001 - stopping must not raise
            log.exception("ibsim shutdown")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> SimGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            s.close()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=2) if tasks else None

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the gateway loop and return its result (direct call before start)."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return fn(*args)
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(10)

    # ------------------------------------------------------------ public API
    def connected_client_ids(self) -> set[int]:
        return self._call(lambda: {s.client_id for s in self.sessions if s.client_id is not None and not s.closed})

    def received_orders(self) -> list[SimOrderRecord]:
        return self._call(lambda: list(self._received))

    def received_cancels(self) -> list[SimCancelRecord]:
        return self._call(lambda: list(self._cancels))

    def orders(self) -> list[OrderStateRecord]:
        def snap() -> list[OrderStateRecord]:
            return [
                OrderStateRecord(
                    o.order_id,
                    o.client_id,
                    o.perm_id,
                    o.order_ref,
                    o.status,
                    o.filled,
                    o.remaining,
                    o.avg_fill_price,
                    o.inst.con_id,
                    o.action,
                    o.order_type,
                    o.total_qty,
                )
                for o in self.engine.orders.values()
            ]

        return self._call(snap)

    def executions(self) -> list[ExecutionRecord]:
        def snap() -> list[ExecutionRecord]:
            return [
                ExecutionRecord(
                    e.exec_id,
                    e.order.order_id,
                    e.order.client_id,
                    e.order.perm_id,
                    e.order.order_ref,
                    e.order.inst.con_id,
                    e.side,
                    e.shares,
                    e.price,
                    e.time,
                    e.commission,
                    e.realized,
                )
                for e in self.engine.executions
            ]

        return self._call(snap)

    def positions(self) -> dict[int, Decimal]:
        return self._call(lambda: {c: p.qty for c, p in self.account.positions.items() if p.qty != 0})

    def cash(self) -> Decimal:
        return self._call(lambda: self.account.cash)

    def con_id(self, symbol: str) -> int:
        return self.market.lookup(symbol).con_id

    def quote(self, symbol_or_con_id: int | str) -> dict[str, Decimal]:
        return self._call(lambda: self.market.quote(self.market.lookup(symbol_or_con_id).con_id).as_dict())

    def set_price(self, symbol_or_con_id: int | str, price: Decimal | float | str) -> None:
        def run() -> None:
            inst = self.market.lookup(symbol_or_con_id)
            self.market.set_price(inst.con_id, Decimal(str(price)))
            self.engine.evaluate_all()
            self._push_ticks({inst.con_id})

        self._call(run)

    def market_close(self) -> None:
        def run() -> None:
            self.engine.market_close()
            self._push_ticks(set(self.market._quotes))

        self._call(run)

    def market_open(self) -> None:
        self._call(self.engine.market_open)

    def pause_market(self) -> None:
        self._paused = True

    def resume_market(self) -> None:
        self._paused = False

    def send_error(self, code: int, message: str, req_id: int = -1, client_id: int | None = None) -> None:
        def run() -> None:
            for s in list(self.sessions):
                if s.client_id is not None and (client_id is None or s.client_id == client_id):
                    s.send(M.error(s.version, req_id, code, message))

        self._call(run)

    def send_connectivity(self, code: int) -> None:
        if code not in CONNECTIVITY:
            raise ValueError(f"connectivity code must be one of {sorted(CONNECTIVITY)}")
        self.send_error(code, CONNECTIVITY[code])

    # fault plumbing (called on the loop by Faults)
    def _drop_all(self) -> None:
        for s in list(self.sessions):
            s.close()

    def _pause_listening(self, seconds: float) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

        async def reopen() -> None:
            await asyncio.sleep(seconds)
            for _ in range(100):
                try:
                    await self._listen()
                    return
                except OSError:
                    await asyncio.sleep(0.05)
            log.error("ibsim could not listen again on port %s", self.port)

        self._spawn(reopen())

    # ------------------------------------------------------------ connection handling
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        s = Session(writer=writer, peer=peer)
        if self.faults.refusing():
            s.close()
            return
        self.sessions.add(s)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.wait_for(self._handshake(s, reader), 10)
            while not s.closed:
                fields = await read_frame(reader)
                if not fields:
                    continue
                try:
                    msg_id = int(fields[0])
                except ValueError as exc:
                    raise ProtocolError(f"bad msgId {fields[0]!r}") from exc
                if msg_id == 71:
                    await self._start_api(s, fields)
                elif s.client_id is None:
                    log.warning("%s: message %s before startApi ignored", peer, msg_id)
                else:
                    self._dispatch(s, msg_id, fields)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        except (TimeoutError, ProtocolError) as exc:
            log.warning("%s: closing connection: %s", peer, exc)
        except Exception:  # noqa: BLE001 - one bad client must not take the gateway down
            log.exception("%s: unexpected error, closing connection", peer)
        finally:
            s.close()
            self.sessions.discard(s)
            if task is not None:
                self._tasks.discard(task)
            log.info("%s: client %s disconnected", peer, s.client_id)

    async def _handshake(self, s: Session, reader: asyncio.StreamReader) -> None:
        prefix = await reader.readexactly(4)
        if prefix != b"API\0":
            raise ProtocolError(f"bad prefix {prefix!r}")
        fields = await read_frame(reader, terminated=False)
        lo, hi = parse_version_range(fields[0] if fields else "")
        version = min(hi, self.server_version)
        if version < lo or version < MIN_SERVER_VERSION:
            raise ProtocolError(f"client versions {lo}..{hi} not supported")
        s.version = version
        now = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S")
        s.send([version, f"{now} UTC"])

    async def _start_api(self, s: Session, fields: list[str]) -> None:
        c = Cursor(fields)
        c.skip(1)
        client_id = c.int()
        # A reconnecting client may beat the close of its previous socket; give it a moment.
        for _ in range(50):
            if not any(o.client_id == client_id and not o.closed for o in self.sessions if o is not s):
                break
            await asyncio.sleep(0.01)
        else:
            s.send(
                M.error(
                    s.version,
                    -1,
                    326,
                    "Unable to connect as the client id is already in use. Retry with a unique client id.",
                )
            )
            await asyncio.sleep(0.05)  # let the error reach the client before closing
            s.close()
            return
        s.client_id = client_id
        s.send([15, 1, self.account_code])
        s.send([9, 1, self.engine.next_valid_id(client_id)])
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            s.send(M.error(s.version, -1, code, text))
        log.info("%s: client %s connected (v%s)", s.peer, client_id, s.version)

    def _dispatch(self, s: Session, msg_id: int, fields: list[str]) -> None:
        if self.faults.swallows(msg_id):
            return
        delay = self.faults.delay_for(msg_id)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._handle, s, msg_id, fields)
        else:
            self._handle(s, msg_id, fields)

    def _handle(self, s: Session, msg_id: int, fields: list[str]) -> None:
        if s.closed:
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            log.info("client %s: unsupported message id %s ignored", s.client_id, msg_id)
            return
        try:
            handler(s, Cursor(fields))
        except ProtocolError as exc:
            log.warning("client %s: malformed message %s ignored: %s", s.client_id, msg_id, exc)
        except Exception:  # noqa: BLE001
            log.exception("client %s: error handling message %s", s.client_id, msg_id)

    # ------------------------------------------------------------ helpers
    def _resolve(self, spec: ContractSpec) -> Instrument | None:
        found = self.market.find(spec)
        if len(found) != 1:
            return None
        inst = found[0]
        return self.market.get(inst.con_id) if inst.sec_type == "CONTFUT" else inst

    def _live(self) -> list[Session]:
        return [s for s in self.sessions if s.client_id is not None and not s.closed]

    def _order_targets(self, o: SimOrder) -> list[Session]:
        return [
            s
            for s in self._live()
            if s.client_id == o.client_id
            or (self.master_client_id is not None and s.client_id == self.master_client_id)
        ]

    def _owner(self, client_id: int) -> Session | None:
        return next((s for s in self._live() if s.client_id == client_id), None)

    # ------------------------------------------------------------ OrderSink
    def order_changed(self, order: SimOrder) -> None:
        for s in self._order_targets(order):
            s.send(M.open_order(s.version, order))
            s.send(M.order_status(order))

    def filled(self, order: SimOrder, ex: SimExecution) -> None:
        for s in self._order_targets(order):
            s.send(M.exec_details(s.version, -1, ex, self.account_code))
            s.send(M.open_order(s.version, order))
            s.send(M.order_status(order))
            s.send(M.commission_report(ex))
        self._push_account(order.inst.con_id)

    def cancelled(self, order: SimOrder, code: int, message: str) -> None:
        for s in self._order_targets(order):
            s.send(M.open_order(s.version, order))
            s.send(M.order_status(order))
        owner = self._owner(order.client_id)
        if owner is not None:
            owner.send(M.error(owner.version, order.order_id, code, message))

    # ------------------------------------------------------------ pushes
    def _push_account(self, con_id: int) -> None:
        p = self.account.positions.get(con_id)
        values = self.account.values()
        pnl = self.account.pnl()
        now = datetime.now(UTC).strftime("%H:%M")
        for s in self._live():
            if p is not None and s.positions:
                s.send(M.position(self.account_code, p))
            if s.acct_updates:
                for key, value, cur in values:
                    s.send([6, 2, key, value, cur, self.account_code])
                if p is not None:
                    s.send(M.portfolio(self.account, p))
                s.send([8, 1, now])
            for req_id in s.multi:
                for key, value, cur in values:
                    s.send([73, 1, req_id, self.account_code, "", key, value, cur])
            for req_id in s.pos_multi:
                if p is not None:
                    s.send(M.position_multi(req_id, self.account_code, p))
            for req_id, tags in s.summary.items():
                for tag, value, cur in self.account.summary(tags):
                    s.send([63, 1, req_id, self.account_code, tag, value, cur])
            for req_id in s.pnl:
                s.send([94, req_id, *pnl])
            for req_id, cid in s.pnl_single.items():
                if cid == con_id:
                    s.send(self._pnl_single_msg(req_id, cid))

    def _pnl_single_msg(self, req_id: int, con_id: int) -> list[Any]:
        pos, daily, unreal, real, value = self.account.pnl_single(con_id)
        return [95, req_id, int(pos), daily, unreal, real, value]

    def _send_ticks(self, s: Session, req_id: int, inst: Instrument, full: bool) -> None:
        q = self.market.quote(inst.con_id)
        ids = DELAYED_TICKS if s.md_type in (3, 4) else LIVE_TICKS
        if inst.has_quotes:
            s.send([1, 6, req_id, ids["bid"], q.bid, q.bid_size, 0])
            s.send([1, 6, req_id, ids["ask"], q.ask, q.ask_size, 0])
        if inst.sec_type != "CASH":  # IDEALPRO has no trades
            s.send([1, 6, req_id, ids["last"], q.last, q.last_size if inst.has_quotes else 0, 0])
            if inst.has_quotes:
                s.send([2, 6, req_id, ids["volume"], q.volume])
        if full or q.high == q.last or q.low == q.last:
            s.send([1, 6, req_id, ids["high"], q.high, 0, 0])
            s.send([1, 6, req_id, ids["low"], q.low, 0, 0])
        if full:
            s.send([1, 6, req_id, ids["close"], q.close, 0, 0])
            s.send([1, 6, req_id, ids["open"], q.open, 0, 0])
        if inst.sec_type != "CASH":
            s.send([46, 6, req_id, ids["time"], int(q.updated.timestamp())])

    def _push_ticks(self, moved: set[int]) -> None:
        if not moved:
            return
        for s in self._live():
            for req_id, inst in list(s.mkt.items()):
                if inst.con_id in moved or inst.under_con_id in moved:
                    self._send_ticks(s, req_id, inst, full=False)
            for req_id, sub in list(s.bars.items()):
                if sub.inst.con_id in moved:
                    self._update_bar(s, req_id, sub)

    def _update_bar(self, s: Session, req_id: int, sub: BarSub) -> None:
        q = self.market.quote(sub.inst.con_id)
        now = datetime.now(UTC)
        if sub.bar_s < 86400:
            bucket = datetime.fromtimestamp(int(now.timestamp()) // sub.bar_s * sub.bar_s, UTC)
            new_bar = bucket > sub.start
        else:
            bucket = sub.start
            new_bar = False
        if new_bar:
            sub.start, sub.open, sub.high, sub.low, sub.volume = bucket, q.last, q.last, q.last, D0
        sub.high, sub.low, sub.close = max(sub.high, q.last), min(sub.low, q.last), q.last
        sub.volume += q.last_size
        wap = round_to_tick((sub.high + sub.low + sub.close) / 3, sub.inst.min_tick)
        date = format_bar_time(sub.start, sub.bar_s >= 86400, sub.format_date, sub.inst.time_zone)
        s.send([90, req_id, -1, date, sub.open, sub.close, sub.high, sub.low, wap, sub.volume])

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                moved = set() if self._paused else self.market.step()
                self.engine.evaluate_all()
                self._push_ticks(moved)
                self._cycle_no += 1
                # P&L streams roughly once a second, like TWS.
                if self._cycle_no % max(1, round(1 / self.tick_interval)) == 0:
                    self._push_pnl()
            except Exception:  # noqa: BLE001 - keep ticking
                log.exception("ibsim tick cycle failed")

    def _push_pnl(self) -> None:
        sessions = [s for s in self._live() if s.pnl or s.pnl_single]
        if not sessions:
            return
        pnl = self.account.pnl()
        for s in sessions:
            for req_id in s.pnl:
                s.send([94, req_id, *pnl])
            for req_id, cid in s.pnl_single.items():
                s.send(self._pnl_single_msg(req_id, cid))

    # ------------------------------------------------------------ request handlers
    def _req_current_time(self, s: Session, c: Cursor) -> None:
        s.send([49, 1, int(datetime.now(UTC).timestamp())])

    def _req_ids(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        s.send([9, 1, self.engine.next_valid_id(s.client_id)])

    def _req_managed_accounts(self, s: Session, c: Cursor) -> None:
        s.send([15, 1, self.account_code])

    def _req_contract_details(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(1)  # includeExpired
        spec.sec_id_type, spec.sec_id = c.str(), c.str()
        found = self.market.find(spec)
        if not found:
            s.send(M.error(s.version, req_id, 200, NO_SECDEF))
            return
        for inst in found:
            exchange = spec.exchange.upper() if spec.exchange else inst.exchange
            if inst.sec_type == "BOND":
                s.send(M.bond_contract_data(s.version, req_id, inst, exchange))
            else:
                s.send(M.contract_data(s.version, req_id, inst, exchange, self.market.today))
        s.send([52, 1, req_id])

    def _req_sec_def_opt_params(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        symbol, fut_fop_exchange, sec_type, con_id = c.str(), c.str(), c.str(), c.int()
        under = self.market.get(con_id) if con_id else None
        if under is None:
            under = self._resolve(ContractSpec(symbol=symbol, sec_type=sec_type or "STK", currency="USD"))
        if under is not None:
            for exchange, tclass, mult, exps, strikes in self.market.option_chains(under.con_id):
                if fut_fop_exchange and fut_fop_exchange.upper() != exchange:
                    continue
                s.send([75, req_id, exchange, under.con_id, tclass, mult, len(exps), *exps, len(strikes), *strikes])
        s.send([76, req_id])

    def _req_matching_symbols(self, s: Session, c: Cursor) -> None:
        req_id, pattern = c.int(), c.str().upper()
        seen: list[Instrument] = []
        for inst in self.market.instruments.values():
            if inst.sec_type in ("OPT", "FUT") or not pattern:
                continue
            if inst.symbol.startswith(pattern) or pattern in inst.long_name.upper():
                seen.append(inst)
        seen.sort(key=lambda i: (i.symbol != pattern, i.symbol, i.con_id))
        fields: list[Any] = [79, req_id, len(seen[:16])]
        for inst in seen[:16]:
            derivs = sorted(
                {
                    d.sec_type
                    for d in self.market.instruments.values()
                    if d.under_con_id == inst.con_id or (d.sec_type == "FUT" and d.symbol == inst.symbol)
                }
            )
            fields += [
                inst.con_id,
                inst.symbol,
                inst.sec_type,
                inst.primary_exchange or inst.exchange,
                inst.currency,
                len(derivs),
                *derivs,
            ]
            if s.version >= 176:
                fields += [M.ascii_escape(inst.long_name), ""]
        s.send(fields)

    def _req_market_data_type(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        md_type = c.int()
        if md_type in (1, 2, 3, 4):
            s.md_type = md_type

    def _req_mkt_data(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        spec = ContractSpec.read(c)
        if spec.sec_type == "BAG":
            c.skip(4 * c.int())
        if c.bool():
            c.skip(3)
        _generic, snapshot, regulatory = c.str(), c.bool(), c.bool()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, NO_SECDEF))
            return
        if req_id in s.mkt:
            s.send(M.error(s.version, req_id, 322, "Error processing request.-'bW' : cause - Duplicate ticker id"))
            return
        if s.md_type in (1, 2) and inst.symbol in self.no_live_permission:
            s.send(M.error(s.version, req_id, 354, "Requested market data is not subscribed."))
            return
        s.send([81, req_id, inst.min_tick, "9c0001", 3])
        if s.md_type != 1:
            s.send([58, 1, req_id, s.md_type])
            if s.md_type in (3, 4):
                s.send(
                    M.error(
                        s.version,
                        req_id,
                        10167,
                        "Requested market data is not subscribed. Displaying delayed market data.",
                    )
                )
        self._send_ticks(s, req_id, inst, full=True)
        if snapshot or regulatory:
            s.send([57, 1, req_id])
        else:
            s.mkt[req_id] = inst

    def _cancel_mkt_data(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.mkt.pop(c.int(), None)

    def _req_historical(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(1)  # includeExpired
        end_text, bar_size, duration = c.str(), c.str(), c.str()
        rth, what, format_date = c.bool(), c.str().upper(), c.int(1)
        if spec.sec_type == "BAG":
            c.skip(4 * c.int())
        keep_up = c.bool()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, NO_SECDEF))
            return

        def hmds_error(text: str) -> None:
            s.send(M.error(s.version, req_id, 162, f"Historical Market Data Service error message:{text}"))

        bar_s = BAR_SIZES.get(" ".join(bar_size.split()).lower().replace("min ", "min").replace("sec ", "secs"))
        if bar_s is None:
            return hmds_error(f"Invalid bar size '{bar_size}'")
        if inst.sec_type == "CASH" and what == "TRADES":
            return hmds_error("No data of type TRADES is available for the exchange 'IDEALPRO'")
        try:
            end = parse_end(end_text)
            bars = make_bars(self.market, inst, end, parse_duration(duration), bar_s, rth, what)
        except OverflowError:
            return hmds_error("Requested too many bars; use a larger bar size or a shorter duration")
        except ValueError as exc:
            return hmds_error(f"Invalid request: {exc}")
        if not bars:
            return hmds_error("HMDS query returned no data")
        start_str = bars[0].start.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
        fields: list[Any] = [17, req_id, start_str, end.strftime("%Y%m%d %H:%M:%S") + " UTC", len(bars)]
        for b in bars:
            fields += [
                format_bar_time(b.start, b.daily, format_date, inst.time_zone),
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.wap,
                b.count,
            ]
        s.send(fields)
        if keep_up:
            last = bars[-1]
            s.bars[req_id] = BarSub(
                inst,
                bar_s,
                format_date,
                last.start.astimezone(UTC),
                last.open,
                last.high,
                last.low,
                last.close,
                max(last.volume, D0),
            )

    def _cancel_historical(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.bars.pop(c.int(), None)

    def _req_head_timestamp(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(3)  # includeExpired, useRTH, whatToShow
        format_date = c.int(1)
        if self._resolve(spec) is None:
            s.send(M.error(s.version, req_id, 200, NO_SECDEF))
            return
        head = datetime(2004, 1, 2, 14, 30, tzinfo=UTC)
        s.send([88, req_id, int(head.timestamp()) if format_date == 2 else head.strftime("%Y%m%d %H:%M:%S UTC")])

    # -- account
    def _req_account_updates(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        subscribe = c.bool()
        s.acct_updates = subscribe
        if not subscribe:
            return
        for key, value, cur in self.account.values():
            s.send([6, 2, key, value, cur, self.account_code])
        for p in self.account.positions.values():
            if p.qty != 0:
                s.send(M.portfolio(self.account, p))
        s.send([8, 1, datetime.now(UTC).strftime("%H:%M")])
        s.send([54, 1, self.account_code])

    def _req_account_updates_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        for key, value, cur in self.account.values():
            s.send([73, 1, req_id, self.account_code, "", key, value, cur])
        s.send([74, 1, req_id])
        s.multi.add(req_id)

    def _cancel_account_updates_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.multi.discard(c.int())

    def _req_account_summary(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id, _group, tags = c.int(), c.str(), {t.strip() for t in c.str().split(",") if t.strip()}
        for tag, value, cur in self.account.summary(tags):
            s.send([63, 1, req_id, self.account_code, tag, value, cur])
        s.send([64, 1, req_id])
        s.summary[req_id] = tags

    def _cancel_account_summary(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.summary.pop(c.int(), None)

    def _req_positions(self, s: Session, c: Cursor) -> None:
        for p in self.account.positions.values():
            if p.qty != 0:
                s.send(M.position(self.account_code, p))
        s.send([62, 1])
        s.positions = True

    def _cancel_positions(self, s: Session, c: Cursor) -> None:
        s.positions = False

    def _req_positions_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        for p in self.account.positions.values():
            if p.qty != 0:
                s.send(M.position_multi(req_id, self.account_code, p))
        s.send([72, 1, req_id])
        s.pos_multi.add(req_id)

    def _cancel_positions_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.pos_multi.discard(c.int())

    def _req_pnl(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        s.send([94, req_id, *self.account.pnl()])
        s.pnl.add(req_id)

    def _cancel_pnl(self, s: Session, c: Cursor) -> None:
        s.pnl.discard(c.int())

    def _req_pnl_single(self, s: Session, c: Cursor) -> None:
        req_id, _account, _model, con_id = c.int(), c.str(), c.str(), c.int()
        s.send(self._pnl_single_msg(req_id, con_id))
        s.pnl_single[req_id] = con_id

    def _cancel_pnl_single(self, s: Session, c: Cursor) -> None:
        s.pnl_single.pop(c.int(), None)

    # -- orders
    def _place_order(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        cid = s.client_id
        req = parse_place_order(c.fields, s.version)
        inst = self._resolve(req.contract)
        perm_id: int | None = None
        try:
            if inst is None:
                raise Reject(200, NO_SECDEF)
            self.engine.validate(req, inst)
            if req.what_if:
                self.engine.note_order_id(cid, req.order_id)
                s.send(self._what_if(s, req, inst))
                return
            existing = self.engine.orders.get((cid, req.order_id))
            if existing is not None and existing.working:
                perm_id = existing.perm_id
                self.engine.modify(existing, req)
            elif existing is not None or req.order_id <= self.engine.max_order_id.get(cid, 0):
                raise Reject(103, f"Duplicate order id {req.order_id}")
            else:
                perm_id = self.engine.place(cid, req, inst).perm_id
        except Reject as rej:
            if not req.what_if and rej.code != 103:
                rec = self.engine.reject_record(cid, req, inst)
                if rec is not None:
                    perm_id = rec.perm_id
                    s.send(M.order_status(rec))
            s.send(M.error(s.version, req.order_id, rej.code, rej.message))
        finally:
            self._received.append(
                SimOrderRecord(
                    client_id=cid,
                    order_id=req.order_id,
                    perm_id=None if req.what_if else perm_id,
                    con_id=inst.con_id if inst else req.contract.con_id,
                    symbol=inst.symbol if inst else req.contract.symbol,
                    sec_type=inst.sec_type if inst else req.contract.sec_type,
                    action=req.action,
                    total_quantity=req.total_quantity,
                    order_type=req.order_type,
                    lmt_price=req.lmt_price,
                    aux_price=req.aux_price,
                    tif=req.tif,
                    order_ref=req.order_ref,
                    what_if=req.what_if,
                    outside_rth=req.outside_rth,
                    received_at=datetime.now(UTC),
                )
            )

    def _what_if(self, s: Session, req, inst: Instrument) -> list[Any]:
        """A single openOrder carrying margin and commission estimates; nothing is stored."""
        q = self.market.quote(inst.con_id)
        qty = req.total_quantity
        price = req.lmt_price or (q.ask if req.action == "BUY" else q.bid)
        fx = self.account.fx(inst.currency)
        notional = qty * price * inst.value_multiplier * fx
        gross = self.account.gross_position_value()
        nlv = self.account.net_liquidation()
        commission = commission_for(inst, qty, price, fx)
        cents = Decimal("0.01")
        figures = {
            "init_before": gross * INIT_MARGIN,
            "maint_before": gross * MAINT_MARGIN,
            "ewl_before": nlv,
            "init_change": notional * INIT_MARGIN,
            "maint_change": notional * MAINT_MARGIN,
            "ewl_change": -commission,
        }
        figures["init_after"] = figures["init_before"] + figures["init_change"]
        figures["maint_after"] = figures["maint_before"] + figures["maint_change"]
        figures["ewl_after"] = nlv - commission
        state: dict[str, Any] = {k: str(v.quantize(cents)) for k, v in figures.items()}
        state.update(
            commission=commission, min_commission=commission, max_commission=commission, commission_currency="USD"
        )
        order = SimOrder(
            order_id=req.order_id,
            client_id=s.client_id or 0,
            perm_id=0,
            inst=inst,
            exchange=req.contract.exchange or inst.exchange,
            action=req.action,
            total_qty=qty,
            order_type=req.order_type,
            lmt_price=req.lmt_price,
            aux_price=req.aux_price,
            tif=req.tif,
            order_ref=req.order_ref,
            outside_rth=req.outside_rth,
            account=self.account_code,
            status="PreSubmitted",
        )
        return M.open_order(s.version, order, what_if=state)

    def _cancel_order(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        c.skip(1)
        order_id = c.int()
        self._cancels.append(SimCancelRecord(s.client_id, order_id, datetime.now(UTC)))
        try:
            self.engine.cancel(s.client_id, order_id)
        except Reject as rej:
            s.send(M.error(s.version, order_id, rej.code, rej.message))

    def _req_global_cancel(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        self._cancels.append(SimCancelRecord(s.client_id, None, datetime.now(UTC)))
        self.engine.cancel_all()

    def _send_open_orders(self, s: Session, orders: list[SimOrder]) -> None:
        for o in orders:
            s.send(M.open_order(s.version, o))
            s.send(M.order_status(o))
        s.send([53, 1])

    def _req_open_orders(self, s: Session, c: Cursor) -> None:
        sees_all = self.master_client_id is not None and s.client_id == self.master_client_id
        self._send_open_orders(
            s, [o for o in self.engine.orders.values() if o.working and (sees_all or o.client_id == s.client_id)]
        )

    def _req_all_open_orders(self, s: Session, c: Cursor) -> None:
        self._send_open_orders(s, [o for o in self.engine.orders.values() if o.working])

    def _req_auto_open_orders(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.auto_bind = c.bool()
        if s.client_id != 0 and s.auto_bind:
            s.send(
                M.error(
                    s.version,
                    -1,
                    321,
                    "Error validating request.-'bX' : cause - reqAutoOpenOrders is only valid for client id 0",
                )
            )

    def _req_completed_orders(self, s: Session, c: Cursor) -> None:
        for o in self.engine.orders.values():
            if o.status in ("Filled", "Cancelled", "Inactive"):
                s.send(M.completed_order(s.version, o))
        s.send([102])

    def _req_executions(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id, client_id, acct, since = c.int(), c.int(), c.str(), c.str()
        symbol, sec_type, exchange, side = c.str().upper(), c.str().upper(), c.str().upper(), c.str().upper()
        since_dt = None
        if since:
            try:
                since_dt = parse_end(since.replace("  ", " "))
            except ValueError:
                since_dt = None
        for ex in self.engine.executions:
            o = ex.order
            if (
                (client_id and o.client_id != client_id)
                or (acct and acct != self.account_code)
                or (symbol and o.inst.symbol != symbol)
                or (sec_type and o.inst.sec_type != sec_type)
                or (exchange and exchange not in (o.exchange, o.inst.primary_exchange))
                or (side and side not in (o.action, ex.side))
                or (since_dt and ex.time < since_dt)
            ):
                continue
            s.send(M.exec_details(s.version, req_id, ex, self.account_code))
            s.send(M.commission_report(ex))
        s.send([55, 1, req_id])
