"""TWS API socket framing, field formatting and request parsing.

Wire format: every message is a 4-byte big-endian length followed by a UTF-8 body
of fields, each *terminated* by NUL.  The only unframed bytes are the client's
``API\\0`` prefix.  See docs/tws-protocol.md.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MIN_SERVER_VERSION = 157
MAX_SERVER_VERSION = 178
MAX_FRAME = 8 * 1024 * 1024  # anything bigger is a foreign or broken client

# What Java TWS sends for "no value"; ib_async turns these back into its UNSET constants.
UNSET_DOUBLE = "1.7976931348623157E308"
UNSET_INT = "2147483647"


class ProtocolError(Exception):
    """The peer sent something we cannot make sense of."""


def fmt(value: Any) -> str:
    """Format one outgoing field (ints stay ints, bools are 0/1, Decimals never use exponents)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return fmt(Decimal(repr(value)))
    return str(value)


def encode(fields: Iterable[Any]) -> bytes:
    body = "".join(fmt(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


async def read_frame(reader: asyncio.StreamReader, terminated: bool = True) -> list[str]:
    """One length-prefixed frame split into fields (the handshake's version frame has no NULs)."""
    header = await reader.readexactly(4)
    (size,) = struct.unpack(">I", header)
    if size == 0 or size > MAX_FRAME:
        raise ProtocolError(f"bad frame length {size}")
    body = await reader.readexactly(size)
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("frame is not UTF-8") from exc
    parts = text.split("\0")
    if not terminated:
        return [p for p in parts if p]
    if parts[-1] != "":
        raise ProtocolError("last field not NUL-terminated")
    return parts[:-1]


def parse_version_range(text: str) -> tuple[int, int]:
    """'v157..178 +PACEAPI' -> (157, 178); 'v100' -> (100, 100)."""
    token = text.split(" ", 1)[0]
    if not token.startswith("v"):
        raise ProtocolError(f"bad version string {text!r}")
    lo, _, hi = token[1:].partition("..")
    try:
        return int(lo), int(hi or lo)
    except ValueError as exc:
        raise ProtocolError(f"bad version string {text!r}") from exc


class Cursor:
    """Sequential reader over the fields of one request (index 0 is the msgId)."""

    def __init__(self, fields: list[str], start: int = 1) -> None:
        self.fields = fields
        self.pos = start

    def str(self) -> str:
        if self.pos >= len(self.fields):
            raise ProtocolError(f"message {self.fields[:1]} too short")
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def skip(self, n: int = 1) -> None:
        for _ in range(n):
            self.str()

    def int(self, default: int = 0) -> int:
        v = self.str()
        if v == "":
            return default
        try:
            return int(float(v)) if "." in v else int(v)
        except ValueError as exc:
            raise ProtocolError(f"expected int, got {v!r}") from exc

    def bool(self) -> bool:
        return self.int() != 0

    def dec(self) -> Decimal | None:
        """Numbers arrive as ints or Python float reprs; empty means unset."""
        v = self.str()
        if v == "" or v == "Infinite":
            return None
        try:
            d = Decimal(v)
        except ArithmeticError as exc:
            raise ProtocolError(f"expected number, got {v!r}") from exc
        if not d.is_finite() or d >= Decimal("1e300"):
            return None
        return d

    def remaining(self) -> int:
        return len(self.fields) - self.pos


@dataclass
class ContractSpec:
    """The 12-field contract block as a client sends it (unqualified values are blank/0)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: Decimal | None = None
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    sec_id_type: str = ""
    sec_id: str = ""

    @classmethod
    def read(cls, c: Cursor) -> ContractSpec:
        spec = cls(
            con_id=c.int(),
            symbol=c.str(),
            sec_type=c.str(),
            last_trade_date=c.str(),
            strike=c.dec(),
            right=c.str(),
            multiplier=c.str(),
            exchange=c.str(),
            primary_exchange=c.str(),
            currency=c.str(),
            local_symbol=c.str(),
            trading_class=c.str(),
        )
        if spec.strike is not None and spec.strike == 0:
            spec.strike = None
        return spec


@dataclass
class OrderRequest:
    """The parts of a placeOrder (msg 3) the simulator acts on."""

    order_id: int
    contract: ContractSpec
    action: str
    total_quantity: Decimal | None
    order_type: str
    lmt_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    good_till_date: str
    trail_stop_price: Decimal | None
    trailing_percent: Decimal | None
    what_if: bool
    unsupported: str = ""  # non-empty -> reject with this reason
    etrade_only: bool = False
    firm_quote_only: bool = False
    nbbo_price_cap: Decimal | None = None
    algo_strategy: str = ""
    algo_params: tuple[tuple[str, str], ...] = ()
    lmt_price_offset: Decimal | None = None
    cash_qty: Decimal | None = None
    oca_type: int = 0  # 1 cancel the rest of the group on a fill, 2/3 reduce it by the fill (0: not set)


def parse_place_order(fields: list[str], version: int) -> OrderRequest:
    """Walk a placeOrder message in the same order ib_async's Client.placeOrder writes it."""
    c = Cursor(fields)
    order_id = c.int()
    spec = ContractSpec.read(c)
    spec.sec_id_type, spec.sec_id = c.str(), c.str()
    action = c.str().upper()
    qty = c.dec()
    order_type = c.str().upper()
    lmt, aux = c.dec(), c.dec()
    tif = c.str().upper() or "DAY"
    oca_group, account, _open_close, _origin = c.str(), c.str(), c.str(), c.str()
    order_ref = c.str()
    transmit = c.bool()
    parent_id = c.int()
    c.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = c.bool()
    c.skip(1)  # hidden
    unsupported = ""
    if spec.sec_type == "BAG":
        unsupported = "combo orders are not supported by the simulator"
        legs = c.int()
        c.skip(8 * legs)
        c.skip(c.int())
        c.skip(2 * c.int())
    c.skip(3)  # deprecated sharesAllocation, discretionaryAmt, goodAfterTime
    good_till_date = c.str()
    c.skip(3)  # faGroup, faMethod, faPercentage
    if version < 177:
        c.skip(1)  # faProfile
    c.skip(4)  # modelCode, shortSaleSlot, designatedLocation, exemptCode
    oca_type = c.int()
    c.skip(5)  # rule80A, settlingFirm, allOrNone, minQty, percentOffset
    etrade_only, firm_quote_only, nbbo_cap = c.bool(), c.bool(), c.dec()
    c.skip(9)  # auctionStrategy .. overridePercentageConstraints, volatility, volatilityType
    if c.str():  # deltaNeutralOrderType
        c.skip(1 + 8)
    else:
        c.skip(1)  # deltaNeutralAuxPrice
    c.skip(2)  # continuousUpdate, referencePriceType
    trail_stop = c.dec()
    trailing_pct = c.dec()
    c.skip(2)  # scaleInitLevelSize, scaleSubsLevelSize
    scale_inc = c.dec()
    if scale_inc is not None and scale_inc > 0:
        c.skip(7)
    c.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if c.str():  # hedgeType
        c.skip(1)
    c.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if c.bool():  # delta-neutral contract
        c.skip(3)
    algo = c.str()
    algo_params: list[tuple[str, str]] = []
    if algo:
        for _ in range(c.int()):
            algo_params.append((c.str(), c.str()))
    c.skip(1)  # algoId
    what_if = c.bool()
    c.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
    if order_type in ("PEG BENCH", "PEGBENCH"):
        c.skip(5)
    lmt_offset = cash_qty = None
    if c.int() > 0:
        # Condition layouts vary by type; nothing we act on follows, so stop here.
        unsupported = unsupported or "order conditions are not supported by the simulator"
    else:
        c.skip(2)  # adjustedOrderType, triggerPrice
        lmt_offset = c.dec()
        c.skip(7)  # adjustedStopPrice .. softDollarTier value
        cash_qty = c.dec()
        c.skip(8)  # mifid2 fields, dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpToLimitPrice, ...
    return OrderRequest(
        order_id=order_id,
        contract=spec,
        action=action,
        total_quantity=qty,
        order_type=order_type,
        lmt_price=lmt,
        aux_price=aux,
        tif=tif,
        oca_group=oca_group,
        account=account,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        outside_rth=outside_rth,
        good_till_date=good_till_date,
        trail_stop_price=trail_stop,
        trailing_percent=trailing_pct,
        what_if=what_if,
        unsupported=unsupported,
        etrade_only=etrade_only,
        firm_quote_only=firm_quote_only,
        nbbo_price_cap=nbbo_cap,
        algo_strategy=algo,
        algo_params=tuple(algo_params),
        lmt_price_offset=lmt_offset,
        cash_qty=cash_qty,
        oca_type=oca_type,
    )
