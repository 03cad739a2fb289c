"""Streaming and snapshot market data (reqMktData), tick pushes and keep-up-to-date bars."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from .. import messages as M
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


class MarketDataRequests:
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
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
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
