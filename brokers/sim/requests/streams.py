"""Streams beside reqMktData: market depth, real-time bars, tick-by-tick data, option calculations."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from .. import messages as M
from ..options import black_scholes, implied_vol
from ..protocol import ContractSpec, Cursor
from ..session import RtBarSub, Session
from ..universe import Instrument, round_to_tick
from .history import NO_FX_TRADES

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)

MAX_DEPTH_SUBSCRIPTIONS = 3  # IB error 309 beyond this many market-depth requests
DEPTH_LEVELS = 5
TBT_TYPES = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}
RT_BAR_WHAT = {"TRADES", "MIDPOINT", "BID", "ASK"}


class StreamRequests:
    # -- market depth
    def _req_mkt_depth(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        spec = ContractSpec.read(c)
        rows, smart = c.int(), c.bool()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        if not inst.has_quotes:
            s.send(
                M.error(
                    s.version,
                    req_id,
                    10092,
                    "Deep market data is not supported for this combination of security type/exchange",
                )
            )
            return
        if self.ib_limits and len(s.depth) >= MAX_DEPTH_SUBSCRIPTIONS:
            s.send(
                M.error(
                    s.version,
                    req_id,
                    309,
                    f"Max number ({MAX_DEPTH_SUBSCRIPTIONS}) of market depth requests has been reached",
                )
            )
            return
        if not self._line_available(s, req_id):
            return
        s.depth[req_id] = (inst, max(1, min(rows or DEPTH_LEVELS, DEPTH_LEVELS)), smart)
        self._send_depth(s, req_id, operation=0)

    def _send_depth(self, s: Session, req_id: int, operation: int) -> None:
        inst, rows, smart = s.depth[req_id]
        q = self.market.quote(inst.con_id)
        for level in range(rows):
            for side, price in ((0, q.ask + inst.min_tick * level), (1, q.bid - inst.min_tick * level)):
                size = (q.ask_size if side == 0 else q.bid_size) * (level + 1)
                if smart:
                    maker = ("NASDAQ", "ARCA", "BATS", "IEX", "EDGX")[level % 5]
                    s.send([13, 1, req_id, level, maker, operation, side, price, size, 1])
                else:
                    s.send([12, 1, req_id, level, operation, side, price, size])

    def _cancel_mkt_depth(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.depth.pop(c.int(), None)

    def _req_mkt_depth_exchanges(self, s: Session, c: Cursor) -> None:
        rows = [
            ("NASDAQ", "STK", "NASDAQ", "Deep2", 1),
            ("ARCA", "STK", "ARCA", "Deep", 1),
            ("CME", "FUT", "", "Deep", 2),
        ]
        rows += [("IDEALPRO", "CASH", "", "Deep", 4)]
        fields: list = [80, len(rows)]
        for row in rows:
            fields += list(row)
        s.send(fields)

    # -- real-time bars (5 seconds)
    def _req_real_time_bars(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        spec = ContractSpec.read(c)
        bar_size, what = c.int(), c.str().upper()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        if bar_size != 5 or what not in RT_BAR_WHAT:
            s.send(
                M.error(
                    s.version,
                    req_id,
                    321,
                    "Error validating request.-'bX' : cause - Only 5 seconds bars "
                    "of TRADES, MIDPOINT, BID or ASK are available",
                )
            )
            return
        if inst.sec_type == "CASH" and what == "TRADES":
            s.send(M.error(s.version, req_id, 162, NO_FX_TRADES))
            return
        q = self.market.quote(inst.con_id)
        price = self._rt_price(inst, what)
        start = int(time.time()) // 5 * 5
        s.rt_bars[req_id] = RtBarSub(
            inst, what, start, price, price, price, price, D0 if what != "TRADES" else q.last_size
        )

    def _rt_price(self, inst: Instrument, what: str) -> Decimal:
        q = self.market.quote(inst.con_id)
        if what == "BID":
            return q.bid
        if what == "ASK":
            return q.ask
        if what == "MIDPOINT":
            return round_to_tick((q.bid + q.ask) / 2, inst.min_tick)
        return q.last

    def _cancel_real_time_bars(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.rt_bars.pop(c.int(), None)

    def _push_rt_bars(self) -> None:
        """Close every 5-second bar whose period has ended (called each tick cycle, moving or not)."""
        if not self.ib_connected:
            return
        bucket = int(time.time()) // 5 * 5
        for s in self._live():
            for req_id, sub in list(s.rt_bars.items()):
                if bucket > sub.start:
                    wap = round_to_tick((sub.high + sub.low + sub.close) / 3, sub.inst.min_tick)
                    s.send(
                        [50, 3, req_id, sub.start, sub.open, sub.high, sub.low, sub.close, sub.volume, wap, sub.count]
                    )
                    price = self._rt_price(sub.inst, sub.what)
                    sub.start, sub.open, sub.high, sub.low, sub.close = bucket, price, price, price, price
                    sub.volume, sub.count = D0, 0

    # -- tick by tick
    def _req_tick_by_tick(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        spec = ContractSpec.read(c)
        kind = c.str()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        if kind not in TBT_TYPES:
            s.send(
                M.error(s.version, req_id, 321, f"Error validating request.-'cb' : cause - Invalid tick type {kind}")
            )
            return
        if req_id in s.tbt:
            s.send(M.error(s.version, req_id, 322, "Error processing request.-'cb' : cause - Duplicate ticker id"))
            return
        if not self._line_available(s, req_id):
            return
        s.tbt[req_id] = (inst, kind)
        self._send_tbt(s, req_id)

    def _send_tbt(self, s: Session, req_id: int) -> None:
        inst, kind = s.tbt[req_id]
        q = self.market.quote(inst.con_id)
        t = int(q.updated.timestamp())
        code = TBT_TYPES[kind]
        if code in (1, 2):
            if inst.sec_type != "CASH":
                s.send([99, req_id, code, t, q.last, q.last_size, 0, inst.primary_exchange or inst.exchange, ""])
        elif code == 3:
            s.send([99, req_id, code, t, q.bid, q.ask, q.bid_size, q.ask_size, 0])
        else:
            s.send([99, req_id, code, t, round_to_tick((q.bid + q.ask) / 2, inst.min_tick)])

    def _cancel_tick_by_tick(self, s: Session, c: Cursor) -> None:
        s.tbt.pop(c.int(), None)

    def _push_streams(self, s: Session, moved: set[int]) -> None:
        for req_id, (inst, _kind) in list(s.tbt.items()):
            if inst.con_id in moved:
                self._send_tbt(s, req_id)
        for req_id, (inst, _rows, _smart) in list(s.depth.items()):
            if inst.con_id in moved:
                self._send_depth(s, req_id, operation=1)
        for sub in s.rt_bars.values():
            if sub.inst.con_id in moved:
                price = self._rt_price(sub.inst, sub.what)
                sub.high, sub.low, sub.close = max(sub.high, price), min(sub.low, price), price
                if sub.what == "TRADES":
                    sub.volume += self.market.quote(sub.inst.con_id).last_size
                sub.count += 1

    # -- option calculations
    def _calc_option(self, s: Session, c: Cursor, implied: bool) -> None:
        c.skip(1)
        req_id = c.int()
        spec = ContractSpec.read(c)
        value, under_price = c.dec(), c.dec()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        if inst.sec_type != "OPT" or value is None or under_price is None or under_price <= 0:
            s.send(
                M.error(
                    s.version,
                    req_id,
                    321,
                    "Error validating request.-'bJ' : cause - Invalid option calculation request",
                )
            )
            return
        years = self.market.option_years(inst)
        spot, strike = float(under_price), float(inst.strike)
        vol = implied_vol(float(value), spot, strike, years, inst.right) if implied else float(value)
        if vol is None:
            s.send(
                M.error(
                    s.version,
                    req_id,
                    321,
                    "Error validating request.-'bJ' : cause - No volatility prices the option at that price",
                )
            )
            return
        g = black_scholes(spot, strike, years, vol, inst.right)
        # Tick type 53: the custom option computation IB sends in answer to these requests.
        s.send(
            [
                21,
                req_id,
                53,
                1,
                round(vol, 6),
                round(g.delta, 6),
                round(g.price, 4),
                0,
                round(g.gamma, 6),
                round(g.vega, 6),
                round(g.theta, 6),
                under_price,
            ]
        )

    def _calc_implied_vol(self, s: Session, c: Cursor) -> None:
        self._calc_option(s, c, implied=True)

    def _calc_option_price(self, s: Session, c: Cursor) -> None:
        self._calc_option(s, c, implied=False)

    def _cancel_calc(self, s: Session, c: Cursor) -> None:
        """Nothing streams after the single answer, so there is nothing to stop."""
