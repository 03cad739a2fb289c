"""One client connection and what it has subscribed to."""

from __future__ import annotations

import asyncio
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
