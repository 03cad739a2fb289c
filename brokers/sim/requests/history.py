"""Historical data requests: bars (with keep-up-to-date), ticks, histograms, head timestamp; HMDS pacing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from .. import messages as M
from ..faults import Faults
from ..history import (
    BAR_SIZES,
    HEAD_TIMESTAMP,
    LEGAL_BAR_SIZES,
    WHAT_TO_SHOW,
    format_bar_time,
    make_bars,
    make_schedule,
    parse_duration,
    parse_end,
)
from ..market import Market
from ..protocol import ContractSpec, Cursor
from ..session import BarSub, Session
from ..universe import Instrument, round_to_tick

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)

PACING_TEXT = "Historical Market Data Service error message:Historical data request pacing violation"
NO_DATA_TEXT = "Historical Market Data Service error message:HMDS query returned no data"
SMALL_BAR_S = 30  # IB's pacing rules apply to bars of 30 seconds or less
SCHEDULE_VERSION = 165  # MIN_SERVER_VER_HISTORICAL_SCHEDULE: whatToShow SCHEDULE, answered with message 106
MAX_TICKS = 1000  # historical ticks per request


# IB error list, 162: IDEALPRO quotes currency pairs and prints no trades, so the historical data service (which
# also serves real-time bars and historical ticks) has no TRADES data for them.
NO_FX_TRADES = (
    "Historical Market Data Service error message:No data of type TRADES is available for the exchange 'IDEALPRO'"
)


def _validation(text: str) -> str:
    return f"Error validating request.-'bP' : cause - {text}"


class HistoryRequests:
    # Provided by SimGateway, which mixes this class in.
    market: Market
    ib_limits: bool
    hmds_log: list[tuple[float, tuple]]
    faults: Faults

    _history_pool: concurrent.futures.ThreadPoolExecutor

    def _resolve(self, spec: ContractSpec) -> Instrument | None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        raise NotImplementedError

    def _paced(self, s: Session, req_id: int, key: tuple) -> bool:
        """IB's historical-data pacing (API reference, "Historical data limitations"): an identical request
        within 15 s, six or more requests for one contract and data type within 2 s, or more than 60
        requests in 10 minutes is answered with error 162 instead of data."""
        if not self.ib_limits:
            return False
        now = time.monotonic()
        self.hmds_log = [(t, k) for t, k in self.hmds_log if now - t < 600]
        recent_same_contract = sum(1 for t, k in self.hmds_log if now - t < 2 and k[:2] == key[:2])
        violation = (
            any(now - t < 15 and k == key for t, k in self.hmds_log)
            or recent_same_contract >= 5
            or len(self.hmds_log) >= 60
        )
        if violation:
            s.send(M.error(s.version, req_id, 162, PACING_TEXT))
            return True
        self.hmds_log.append((now, key))
        return False

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

        def refuse(code: int, text: str) -> None:
            s.send(M.error(s.version, req_id, code, text))

        # IB error list, 321: invalid bar size, whatToShow, or an end date together with keepUpToDate.
        bar_s = BAR_SIZES.get(" ".join(bar_size.split()).lower().replace("min ", "min").replace("sec ", "secs"))
        if bar_s is None:
            return refuse(
                321, _validation(f"Historical data bar size setting is invalid. Legal ones are: {LEGAL_BAR_SIZES}")
            )
        schedule = what == "SCHEDULE" and s.version >= SCHEDULE_VERSION
        if what not in WHAT_TO_SHOW and not schedule:
            return refuse(321, _validation(f"Historical data query whatToShow '{what}' is invalid."))
        if keep_up and end_text.strip():
            return refuse(321, _validation("End date not supported with live updates."))
        if inst.sec_type == "CASH" and what in ("TRADES", "ADJUSTED_LAST"):
            return refuse(162, NO_FX_TRADES)
        try:
            end, zoned = parse_end(end_text)
            dur = parse_duration(duration)
        except (ValueError, KeyError) as exc:
            return refuse(321, _validation(f"Invalid request: {exc}"))
        if not zoned:
            # IB error list, 2174: a time without zone is read in the login time zone (UTC here), with a warning.
            refuse(
                2174,
                "Warning: You submitted request with date-time attributes without explicit time zone. Please switch "
                "to use yyyymmdd-hh:mm:ss in UTC or use instrument time zone, like US/Eastern. Implied time zone "
                "functionality will be removed in the next API release",
            )
        if schedule:
            return self._send_schedule(s, req_id, inst, end, dur, rth)
        if bar_s <= SMALL_BAR_S and self._paced(s, req_id, (inst.con_id, what, bar_s, end_text, duration, rth)):
            return
        now = datetime.now(UTC)
        if keep_up:
            s.bars_pending.add(req_id)

        def compute() -> Callable[[], None]:
            try:
                bars = make_bars(self.market, inst, end, dur, bar_s, rth, what, now=now)
            except OverflowError:
                return lambda: refuse(
                    162,
                    "Historical Market Data Service error message:Requested too many bars; use a larger "
                    "bar size or a shorter duration",
                )
            if not bars:
                return lambda: refuse(162, NO_DATA_TEXT)
            start_str = bars[0].start.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
            last_str = min(end, now).strftime("%Y%m%d %H:%M:%S") + " UTC"
            fields: list[Any] = [17, req_id, start_str, last_str, len(bars)]
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

            def reply() -> None:
                s.send(fields)
                if keep_up and req_id in s.bars_pending:
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
                s.bars_pending.discard(req_id)

            return reply

        self._answer_later(s, req_id, compute)

    def _answer_later(self, s: Session, req_id: int, compute: Callable[[], Callable[[], None]]) -> None:
        """Compute a historical answer off the event loop, so a large request does not hold up other
        clients, and send it once those of the connection's earlier requests have gone: ``compute`` runs
        in the history thread and returns what to do on the loop."""

        def work() -> Callable[[], None]:
            self.faults.history_gate()
            return compute()

        loop = asyncio.get_running_loop()
        result = loop.run_in_executor(self._history_pool, work)
        previous = s.history_tail

        async def deliver() -> None:
            try:
                reply = await result
            except Exception:  # noqa: BLE001 - answered like any request that fails
                log.exception("client %s: error computing historical data %s", s.client_id, req_id)
                reply = partial(s.send, M.error(s.version, req_id, 321, "Error validating request."))
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if not s.closed:
                reply()

        s.history_tail = self._spawn(deliver())

    def _send_schedule(
        self, s: Session, req_id: int, inst: Instrument, end: datetime, dur: tuple[int, str], rth: bool
    ) -> None:
        """The trading sessions in the window, in the instrument's time zone ('YYYYMMDD-HH:MM:SS')."""
        now = datetime.now(UTC)

        def compute() -> Callable[[], None]:
            sessions = make_schedule(self.market, inst, end, dur, rth, now=now)
            if not sessions:
                return partial(s.send, M.error(s.version, req_id, 162, NO_DATA_TEXT))
            tz = ZoneInfo(inst.time_zone)

            def local(t: datetime) -> str:
                return t.astimezone(tz).strftime("%Y%m%d-%H:%M:%S")

            first, last = sessions[0].start, sessions[-1].end
            fields: list[Any] = [106, req_id, local(first), local(last), inst.time_zone, len(sessions)]
            for session in sessions:
                fields += [local(session.start), local(session.end), session.day.strftime("%Y%m%d")]
            return partial(s.send, fields)

        self._answer_later(s, req_id, compute)

    def _cancel_historical(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        s.bars.pop(req_id, None)
        s.bars_pending.discard(req_id)

    def _req_head_timestamp(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(3)  # includeExpired, useRTH, whatToShow
        format_date = c.int(1)
        if self._resolve(spec) is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        head = HEAD_TIMESTAMP
        s.send([88, req_id, int(head.timestamp()) if format_date == 2 else head.strftime("%Y%m%d %H:%M:%S UTC")])

    def _req_historical_ticks(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(1)  # includeExpired
        start_text, end_text, count, what, rth = c.str(), c.str(), c.int(), c.str().upper(), c.bool()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        if bool(start_text.strip()) == bool(end_text.strip()) or what not in ("TRADES", "BID_ASK", "MIDPOINT"):
            s.send(
                M.error(
                    s.version,
                    req_id,
                    321,
                    _validation(
                        "Exactly one of start and end time, and whatToShow TRADES, BID_ASK or MIDPOINT, are required."
                    ),
                )
            )
            return
        try:
            start = parse_end(start_text)[0] if start_text.strip() else None
            end = parse_end(end_text)[0] if end_text.strip() else None
        except (ValueError, KeyError) as exc:
            s.send(M.error(s.version, req_id, 321, _validation(f"Invalid request: {exc}")))
            return
        if inst.sec_type == "CASH" and what == "TRADES":
            s.send(M.error(s.version, req_id, 162, NO_FX_TRADES))
            return
        if self._paced(s, req_id, (inst.con_id, what, "ticks", start_text, end_text, rth)):
            return
        ticks = self._tick_times(inst, start, end, max(1, min(count or MAX_TICKS, MAX_TICKS)))
        path = self.market.path(inst)
        fields: list[Any] = [{"MIDPOINT": 96, "BID_ASK": 97, "TRADES": 98}[what], req_id, len(ticks)]
        half = inst.min_tick * (inst.spread_ticks // 2)
        for t in ticks:
            price = round_to_tick(Decimal(str(round(path.price(t), 8))), inst.min_tick)
            stamp = int(t.timestamp())
            size = inst.lot * (1 + stamp % 7)
            if what == "MIDPOINT":
                fields += [stamp, 0, price, 0]
            elif what == "BID_ASK":
                fields += [stamp, 0, price - half, price - half + inst.min_tick * inst.spread_ticks, size, size]
            else:
                fields += [stamp, 0, price, size, inst.primary_exchange or inst.exchange, ""]
        fields.append(1)  # done
        s.send(fields)

    def _tick_times(self, inst: Instrument, start, end, count: int) -> list[datetime]:
        """One tick every 2 seconds from ``start`` forward, or up to ``end`` backward; never in the future."""
        now = datetime.now(UTC)
        step = timedelta(seconds=2)
        if start is not None:
            first = max(start, HEAD_TIMESTAMP)
            return [t for t in (first + step * k for k in range(count)) if t <= now]
        last = min(end, now)
        return [last - step * k for k in range(count - 1, -1, -1) if last - step * k >= HEAD_TIMESTAMP]

    def _req_histogram(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(1)  # includeExpired
        rth, period = c.bool(), c.str()
        inst = self._resolve(spec)
        if inst is None:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        match = re.fullmatch(r"\s*(\d+)\s*(day|week|month)s?\s*", period, re.IGNORECASE)
        if match is None:
            s.send(M.error(s.version, req_id, 321, _validation(f"Invalid time period '{period}'")))
            return
        n, unit = int(match[1]), {"day": "D", "week": "W", "month": "M"}[match[2].lower()]
        now = datetime.now(UTC)

        def compute() -> Callable[[], None]:
            bars = make_bars(self.market, inst, now, (n, unit), 300, rth, "TRADES", now=now)
            counts: Counter = Counter()
            for b in bars:
                counts[b.close] += max(int(b.volume), 0)
            fields: list[Any] = [89, req_id, len(counts)]
            for price in sorted(counts):
                fields += [price, counts[price]]
            return partial(s.send, fields)

        self._answer_later(s, req_id, compute)
