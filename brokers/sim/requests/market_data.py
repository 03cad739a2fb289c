"""Streaming and snapshot market data (reqMktData), tick pushes and keep-up-to-date bars."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from .. import messages as M
from ..book import OrderEngine
from ..history import format_bar_time
from ..protocol import ContractSpec, Cursor
from ..session import BarSub, Session
from ..universe import Instrument, round_to_tick

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


# Generic tick lists reqMktData understands (IB's tick-type reference); anything else gets 321.
GENERIC_TICKS = {
    "100",
    "101",
    "104",
    "106",
    "165",
    "221",
    "225",
    "233",
    "236",
    "258",
    "293",
    "294",
    "295",
    "375",
    "411",
}
GENERIC_TICKS |= {"456", "588"}
GREEK_TICKS = (10, 11, 12, 13)  # bid, ask, last and model option computations


class MarketDataRequests:
    engine: OrderEngine  # the gateway's (SimGateway)

    def _send_generic(self, s: Session, req_id: int, inst: Instrument, generic: set[str], full: bool) -> None:
        """The generic ticks asked for in reqMktData; the slow-moving ones only with the first batch."""
        q = self.market.quote(inst.con_id)
        if "233" in generic and inst.sec_type != "CASH":  # RTVolume: price;size;ms;volume;vwap;single trade
            vwap = round_to_tick((q.high + q.low + q.last) / 3, inst.min_tick)
            ms = int(q.updated.timestamp() * 1000)
            s.send([46, 6, req_id, 48, f"{q.last};{q.last_size};{ms};{q.volume};{vwap};true"])
        if not full:
            return
        if "236" in generic:  # shortable: > 2.5 means at least 1000 shares are available to short
            s.send([45, 6, req_id, 46, 3])
        if "165" in generic:  # 13/26/52-week lows and highs, average volume
            for tick, factor in ((15, "0.92"), (16, "1.07"), (17, "0.87"), (18, "1.10"), (19, "0.78"), (20, "1.16")):
                s.send([1, 6, req_id, tick, round_to_tick(q.close * Decimal(factor), inst.min_tick), 0, 0])
            s.send([2, 6, req_id, 21, q.volume])
        if "100" in generic and inst.sec_type == "STK":  # option call / put volume
            s.send([2, 6, req_id, 29, 41_250])
            s.send([2, 6, req_id, 30, 37_900])
        if "101" in generic and inst.sec_type in ("STK", "OPT"):  # call / put open interest
            s.send([2, 6, req_id, 27, 512_000])
            s.send([2, 6, req_id, 28, 488_000])
        if "104" in generic:  # historical volatility (30 days)
            s.send([45, 6, req_id, 23, round(inst.annual_vol, 4)])
        if "106" in generic:  # option implied volatility of the underlying
            s.send([45, 6, req_id, 24, round(inst.annual_vol * 1.05, 4)])
        if "411" in generic:  # real-time historical volatility
            s.send([45, 6, req_id, 58, round(inst.annual_vol, 4)])
        if "221" in generic:  # mark price
            s.send([1, 6, req_id, 37, q.last, 0, 0])
        if "293" in generic:  # trade count
            s.send([45, 6, req_id, 54, int(q.volume / max(1, inst.lot))])
        if "588" in generic and inst.sec_type == "FUT":  # futures open interest
            s.send([2, 6, req_id, 86, 2_150_000])

    def _send_greeks(self, s: Session, req_id: int, inst: Instrument) -> None:
        """tickOptionComputation for bid, ask, last and model, as IB streams them for options."""
        q = self.market.quote(inst.con_id)
        under = self.market.quote(inst.under_con_id).last
        g = self.market.option_greeks(inst)
        vol = self.market.instruments[inst.under_con_id].annual_vol
        for tick, price in zip(GREEK_TICKS, (q.bid, q.ask, q.last, None), strict=True):
            opt = g.price if price is None else float(price)
            s.send(
                [21, req_id, tick, 1, round(vol, 6), round(g.delta, 6), round(opt, 4), 0, round(g.gamma, 6)]
                + [round(g.vega, 6), round(g.theta, 6), under]
            )

    def _send_ticks(self, s: Session, req_id: int, inst: Instrument, full: bool, md_type: int) -> None:
        q = self.market.quote(inst.con_id)
        ids = DELAYED_TICKS if md_type in (3, 4) else LIVE_TICKS
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
        if not moved or not self.ib_connected:
            return  # between 1100 and 1101/1102 no market data reaches the client
        for s in self._live():
            for req_id, inst in list(s.mkt.items()):
                if inst.con_id in moved or inst.under_con_id in moved:
                    self._send_ticks(s, req_id, inst, full=False, md_type=s.mkt_type.get(req_id, 1))
                    if req_id in s.generic:
                        self._send_generic(s, req_id, inst, s.generic[req_id], full=False)
                    if inst.sec_type == "OPT":
                        self._send_greeks(s, req_id, inst)
            self._push_streams(s, moved)
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
        generic_text, snapshot, regulatory = c.str(), c.bool(), c.bool()
        generic = {g.strip() for g in generic_text.split(",") if g.strip()}
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        if req_id in s.mkt:
            s.send(M.error(s.version, req_id, 322, "Error processing request.-'bW' : cause - Duplicate ticker id"))
            return
        if generic - GENERIC_TICKS:
            legal = ",".join(sorted(GENERIC_TICKS, key=int))
            s.send(
                M.error(
                    s.version,
                    req_id,
                    321,
                    f"Error validating request.-'bW' : cause - Incorrect generic tick list of {generic_text}.  "
                    f"Legal ones for ({inst.sec_type}) are: {legal}",
                )
            )
            return
        if generic and snapshot:  # IB API reference: snapshots take no generic ticks
            s.send(
                M.error(
                    s.version,
                    req_id,
                    321,
                    "Error validating request.-'bW' : cause - Snapshot market data subscription "
                    "is not applicable to generic ticks",
                )
            )
            return
        if not snapshot and not regulatory and not self._line_available(s, req_id):
            return
        live_permitted = inst.symbol not in self.no_live_permission
        if s.md_type in (1, 2) and not live_permitted:
            s.send(M.error(s.version, req_id, 354, "Requested market data is not subscribed."))
            return
        # As TWS (v970 on) does for every request: the type of the data that follows, then its parameters.
        # The subscription keeps this type; a later reqMarketDataType applies to later requests only. Delayed
        # (3) and delayed-frozen (4) data are only for symbols without a live subscription: the others get
        # live (1) and frozen (2) data, as at IB.
        md_type = s.md_type
        if md_type in (3, 4) and live_permitted:
            md_type -= 2
        if md_type in (2, 4) and self._quoting(inst):
            md_type -= 1  # frozen data is the last quote when there is no current one: while open, there is
        s.send([58, 1, req_id, md_type])
        s.send([81, req_id, inst.min_tick, "9c0001", 3])
        if md_type != 1:
            if md_type in (3, 4):
                s.send(
                    M.error(
                        s.version,
                        req_id,
                        10167,
                        "Requested market data is not subscribed. Displaying delayed market data.",
                    )
                )
        self._send_ticks(s, req_id, inst, full=True, md_type=md_type)
        if generic:
            self._send_generic(s, req_id, inst, generic, full=True)
        if inst.sec_type == "OPT":
            self._send_greeks(s, req_id, inst)
        if snapshot or regulatory:
            s.send([57, 1, req_id])
        else:
            s.mkt[req_id] = inst
            s.mkt_type[req_id] = md_type
            if generic:
                s.generic[req_id] = generic

    def _quoting(self, inst: Instrument) -> bool:
        """Whether the instrument's market is quoting now (its regular or extended session, or always)."""
        sessions = self.engine.sessions
        if sessions is None:
            return True
        state = sessions(inst, self.engine.clock())
        return state.regular or state.extended

    def _line_available(self, s: Session, req_id: int) -> bool:
        """IB's market-data lines: a paper account has 100; one more is answered with error 101."""
        if not self.ib_limits or s.market_data_lines() < self.max_market_data_lines:
            return True
        s.send(M.error(s.version, req_id, 101, "Max number of tickers has been reached."))
        return False

    def _cancel_mkt_data(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        if s.mkt.pop(req_id, None) is None:
            # IB error list, 300: no subscription under that id (never made, cancelled already, a snapshot that
            # has ended, or dropped by a 1101).
            s.send(M.error(s.version, req_id, 300, f"Can't find EId with tickerId:{req_id}"))
        s.mkt_type.pop(req_id, None)
        s.generic.pop(req_id, None)
