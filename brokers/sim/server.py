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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import messages as M
from .account import Account
from .book import OrderEngine
from .connection import Connections
from .faults import Faults
from .market import Instrument, Market
from .protocol import MAX_SERVER_VERSION, MIN_SERVER_VERSION, ContractSpec, Cursor
from .records import ExecutionRecord, OrderStateRecord, SimCancelRecord, SimOrderRecord
from .requests.account import AccountRequests
from .requests.contracts import ContractRequests
from .requests.history import HistoryRequests
from .requests.market_data import MarketDataRequests
from .requests.orders import OrderRequests
from .session import Session

__all__ = ["ExecutionRecord", "OrderStateRecord", "SimCancelRecord", "SimGateway", "SimOrderRecord"]

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)

CONNECTIVITY = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
}


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


class SimGateway(Connections, MarketDataRequests, HistoryRequests, AccountRequests, OrderRequests, ContractRequests):
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

    # ------------------------------------------------------------ helpers
    def _resolve(self, spec: ContractSpec) -> Instrument | None:
        found = self.market.find(spec)
        if len(found) != 1:
            return None
        inst = found[0]
        return self.market.get(inst.con_id) if inst.sec_type == "CONTFUT" else inst

    def _live(self) -> list[Session]:
        return [s for s in self.sessions if s.client_id is not None and not s.closed]

    def _owner(self, client_id: int) -> Session | None:
        return next((s for s in self._live() if s.client_id == client_id), None)

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
