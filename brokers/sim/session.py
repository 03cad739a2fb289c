"""One client connection and what it has subscribed to."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .protocol import encode
from .universe import Instrument


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


@dataclass
class RtBarSub:
    inst: Instrument
    what: str
    start: int  # epoch seconds of the bar being built (5 s bars)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    count: int = 0


@dataclass(eq=False)  # identity hash: sessions live in a set
class Session:
    writer: asyncio.StreamWriter
    peer: str
    client_id: int | None = None
    version: int = 0
    md_type: int = 1  # reqMarketDataType: the type of the market data requested from now on
    mkt: dict[int, Instrument] = field(default_factory=dict)
    mkt_type: dict[int, int] = field(default_factory=dict)  # each reqMktData keeps the type it was made with
    bars: dict[int, BarSub] = field(default_factory=dict)
    bars_pending: set[int] = field(default_factory=set)  # keepUpToDate requests whose bars are being computed
    history_tail: asyncio.Task | None = None  # the last historical answer being computed, sent in request order
    acct_updates: bool = False
    acct_code: str = ""  # the account reqAccountUpdates subscribed to ("": the only one)
    positions: bool = False
    multi: set[int] = field(default_factory=set)
    pos_multi: set[int] = field(default_factory=set)
    summary: dict[int, set[str]] = field(default_factory=dict)
    pnl: set[int] = field(default_factory=set)
    pnl_single: dict[int, int] = field(default_factory=dict)
    auto_bind: bool = False
    closed: bool = False
    pace_api: bool = False  # the client asked TWS to pace its requests (+PACEAPI) instead of disconnecting
    msg_times: deque = field(default_factory=deque)  # arrival times of the last second's messages
    generic: dict[int, set[str]] = field(default_factory=dict)  # reqMktData generic tick lists
    rt_bars: dict[int, RtBarSub] = field(default_factory=dict)
    tbt: dict[int, tuple[Instrument, str]] = field(default_factory=dict)  # tick-by-tick: (instrument, type)
    depth: dict[int, tuple[Instrument, int, bool]] = field(default_factory=dict)  # (instrument, rows, smart)

    def market_data_lines(self) -> int:
        return len(self.mkt) + len(self.tbt) + len(self.depth)

    def drop_market_data(self) -> None:
        """What IB does on 1101 (connectivity restored, data lost): every subscription is gone."""
        for subs in (
            self.mkt,
            self.mkt_type,
            self.bars,
            self.bars_pending,
            self.generic,
            self.rt_bars,
            self.tbt,
            self.depth,
        ):
            subs.clear()

    _out: list[bytes] = field(default_factory=list)  # messages of this loop iteration, written together

    def send(self, fields: list[Any]) -> None:
        if self.closed:
            return
        if not self._out:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # not on the gateway's loop: write at once
                self.writer.write(encode(fields))
                return
        self._out.append(encode(fields))

    def flush(self) -> None:
        if self._out and not self.closed:
            self.writer.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            self.writer.transport.abort()
