"""Simulated IB Gateway: a TCP server speaking the TWS API socket protocol (v157-178).

Unmodified TWS API clients (ib_async, ib_insync, IB's own ibapi) connect to it as to a real gateway.
It runs its own asyncio loop in a daemon thread; the public methods are thread-safe.

This module holds the gateway object (construction, lifecycle, the Python API tests drive it
with); connection handling is in connection.py and each request family in requests/*.py. What is
modelled and how (universe, prices, orders, margin, limits, hours) is described in docs/simulator.md.

Defaults behave like IB: exchange trading hours, IB's pacing limits and a margin check. Embedders
that must work at any hour or under load pass ``trading_hours="always"`` and ``ib_limits=False``.
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
from .calendar import calendar_name, session_state
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
from .requests.reference import ReferenceRequests
from .requests.streams import StreamRequests
from .session import Session

__all__ = ["ExecutionRecord", "OrderStateRecord", "SimCancelRecord", "SimGateway", "SimOrderRecord"]

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)

CONNECTIVITY = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
}


class SimGateway(
    Connections,
    MarketDataRequests,
    StreamRequests,
    HistoryRequests,
    AccountRequests,
    OrderRequests,
    ContractRequests,
    ReferenceRequests,
):
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
        trading_hours: str = "exchange",
        clock: Callable[[], datetime] | None = None,
        *,
        managed_accounts: tuple[str, ...] | None = None,
        ib_limits: bool = True,
        max_market_data_lines: int = 100,
        max_messages_per_second: int = 50,
        margin_checks: bool = True,
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
        # The accounts the login manages, in IB's order (an advisor's login lists its clients' accounts).
        # Orders, fills and positions are `account`'s; the others are listed, hold their cash and nothing else.
        self.managed_accounts = tuple(managed_accounts or (account,))
        if account not in self.managed_accounts or len(set(self.managed_accounts)) != len(self.managed_accounts):
            raise ValueError("managed_accounts must name each account once, the trading account among them")
        self.other_accounts = {
            code: Account(code, self.market, Decimal(starting_cash))
            for code in self.managed_accounts
            if code != account
        }
        if trading_hours not in ("always", "exchange"):
            raise ValueError(f"trading_hours must be 'always' or 'exchange', not {trading_hours!r}")
        # "exchange": orders trade only while the instrument's exchange calendar says the market is open
        # (outsideRth limit orders also in US stocks' extended hours); "always": the market never closes.
        self.trading_hours = trading_hours
        self.engine = OrderEngine(
            self.market,
            self.account,
            self,
            partial_fill_threshold,
            seed,
            sessions=session_state if trading_hours == "exchange" else None,
            clock=clock or (lambda: datetime.now(UTC)),
        )
        # IB's limits (docs/simulator.md): message rate (error 100, then disconnect), historical-data pacing
        # (162) and market-data lines (101). Off for load tests.
        self.ib_limits = ib_limits
        self.max_market_data_lines = max_market_data_lines
        self.max_messages_per_second = max_messages_per_second
        self.margin_checks = margin_checks
        self.hmds_log: list[tuple[float, tuple]] = []  # (monotonic time, request key) of historical requests
        self.ib_connected = True  # False between send_connectivity(1100) and 1101/1102: no data flows
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
        # Historical answers are computed here, off the event loop (a few threads: the loop keeps its share).
        self._history_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="ibsim-history")
        self._cycle_no = 0
        self._account_dirty = False  # a fill changed the account; its values go out with the next batch
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
            # streams beside reqMktData
            10: self._req_mkt_depth,
            11: self._cancel_mkt_depth,
            50: self._req_real_time_bars,
            51: self._cancel_real_time_bars,
            54: self._calc_implied_vol,
            55: self._calc_option_price,
            56: self._cancel_calc,
            57: self._cancel_calc,
            82: self._req_mkt_depth_exchanges,
            97: self._req_tick_by_tick,
            98: self._cancel_tick_by_tick,
            # history beside bars
            88: self._req_histogram,
            89: self._ignore,
            90: self._ignore,
            96: self._req_historical_ticks,
            # reference data and services
            12: self._ignore,
            13: self._ignore,
            14: self._ignore,
            18: self._request_fa,
            19: self._request_fa,
            21: self._exercise_options,
            22: self._req_scanner_subscription,
            23: self._cancel_scanner_subscription,
            24: self._req_scanner_parameters,
            52: self._req_fundamental_data,
            53: self._ignore,
            65: self._verify,
            66: self._verify,
            67: self._query_display_groups,
            68: self._subscribe_group_events,
            69: self._update_display_group,
            70: self._ignore,
            72: self._verify,
            73: self._verify,
            79: self._req_soft_dollar_tiers,
            80: self._req_family_codes,
            83: self._req_smart_components,
            84: self._req_news_article,
            85: self._req_news_providers,
            86: self._req_historical_news,
            91: self._req_market_rule,
            100: self._req_wsh_meta_data,
            101: self._ignore,
            102: self._req_wsh_event_data,
            103: self._ignore,
            104: self._req_user_info,
        }

    # ------------------------------------------------------------ lifecycle
    def start(self) -> SimGateway:
        if self.engine.sessions is not None:
            # Load the exchange calendars now: the first load takes seconds and would stall the first order.
            now = datetime.now(UTC)
            for inst in {calendar_name(i): i for i in self.market.instruments.values()}.values():
                self.engine.sessions(inst, now)
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
                self._spawn(self._ticker())
                self._spawn(self._heartbeat())
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
        self._history_pool.shutdown(wait=False, cancel_futures=True)

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
        """IB's connectivity messages with their effect: 1100 stops all market data; 1101 restores the
        connection with every market-data subscription gone (clients must subscribe again); 1102 restores
        it with subscriptions kept."""
        if code not in CONNECTIVITY:
            raise ValueError(f"connectivity code must be one of {sorted(CONNECTIVITY)}")

        def run() -> None:
            self.ib_connected = code != 1100
            if code == 1101:
                for s in self._live():
                    s.drop_market_data()

        self._call(run)
        self.send_error(code, CONNECTIVITY[code])

    def halt(self, symbol_or_con_id: int | str) -> None:
        """Halt trading in one instrument (and its options): tick 49 (halted) = 1, no fills until resume()."""
        self._set_halt(symbol_or_con_id, True)

    def resume(self, symbol_or_con_id: int | str) -> None:
        self._set_halt(symbol_or_con_id, False)

    def _set_halt(self, key: int | str, halted: bool) -> None:
        def run() -> None:
            inst = self.market.lookup(key)
            (self.engine.halted.add if halted else self.engine.halted.discard)(inst.con_id)
            for s in self._live():
                for req_id, sub in s.mkt.items():
                    if inst.con_id in (sub.con_id, sub.under_con_id):
                        s.send([45, 6, req_id, 49, 1 if halted else 0])
            if not halted:
                self.engine.evaluate_all()

        self._call(run)

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
                self._push_rt_bars()
                self._cycle_no += 1
                # P&L streams roughly once a second, like TWS.
                if self._cycle_no % max(1, round(1 / self.tick_interval)) == 0:
                    self._push_pnl()
            except Exception:  # noqa: BLE001 - keep ticking
                log.exception("ibsim tick cycle failed")
