"""Historical data: bars, head timestamp."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .. import messages as M
from ..history import BAR_SIZES, format_bar_time, make_bars, parse_duration, parse_end
from ..protocol import ContractSpec, Cursor
from ..session import BarSub, Session

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)


class HistoryRequests:
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
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
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
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        head = datetime(2004, 1, 2, 14, 30, tzinfo=UTC)
        s.send([88, req_id, int(head.timestamp()) if format_date == 2 else head.strftime("%Y%m%d %H:%M:%S UTC")])
