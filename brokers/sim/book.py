"""Order engine: validation, resting orders, triggers, (partial) fills, cancels.

The engine is synchronous and runs on the gateway's event loop.  It reports what
happened through an :class:`OrderSink` so the server can turn it into openOrder,
orderStatus, execDetails and commissionReport messages in the order TWS sends them.

Fill model
* Marketable orders fill at the touch (buy at the ask, sell at the bid).
* A working order fills at most ``partial_fill_threshold`` per evaluation; the
  remainder fills on later evaluations (every tick_interval, and on set_price).
  ``None`` disables partial fills.
* STP / STP LMT trigger on the last price (buy: last >= stop, sell: last <= stop),
  then behave as MKT / LMT.  TRAIL keeps a trailing stop off the last price.
* MOC / LOC rest until :meth:`OrderEngine.market_close`; they then fill in full at
  the simulated close (the last price), LOC only if the close satisfies its limit.
  OPG orders rest until :meth:`OrderEngine.market_open` and fill in full there.
* IOC fills what it can immediately and cancels the rest; FOK fills in full
  immediately or is cancelled.
* GTD orders are cancelled when their goodTillDate passes; with exchange hours, DAY orders at the end of
  their session. Both follow the engine's clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from .account import Account, commission_for
from .calendar import SessionState, session_end
from .market import Instrument, Market, round_to_tick
from .protocol import OrderRequest

D0 = Decimal(0)

SUPPORTED_TYPES = {
    "MKT",
    "LMT",
    "STP",
    "STP LMT",
    "MOC",
    "LOC",
    "TRAIL",
    "TRAIL LIMIT",
    "MIT",
    "LIT",
    "MIDPRICE",
    "REL",
}
# Order types IB lets trade outside regular hours when outsideRth is set (others ignore it: warning 2109).
OUTSIDE_RTH_TYPES = {"LMT", "STP LMT", "LIT", "TRAIL LIMIT"}
LIMITED = {"LMT", "STP LMT", "LOC", "LIT", "TRAIL LIMIT"}
SUPPORTED_TIFS = {"DAY", "GTC", "IOC", "FOK", "OPG", "GTD"}
WORKING = {"PreSubmitted", "Submitted"}

_ENGINES = itertools.count()  # engines started in this process, so two never share execution ids


@dataclass
class SimOrder:
    order_id: int
    client_id: int
    perm_id: int
    inst: Instrument
    exchange: str
    action: str
    total_qty: Decimal
    order_type: str
    lmt_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    order_ref: str
    outside_rth: bool
    account: str
    oca_group: str = ""
    oca_type: int = 0  # as sent: 1 cancels the rest of the group on a fill, 2 and 3 reduce it (0: not set)
    parent_id: int = 0
    trailing_percent: Decimal | None = None
    trail_stop: Decimal | None = None
    status: str = "PreSubmitted"
    filled: Decimal = D0
    avg_fill_price: Decimal = D0
    last_fill_price: Decimal = D0
    triggered: bool = False
    completed_time: str = ""
    completed_status: str = ""
    warning: str = ""
    held: bool = False  # placed with transmit=False: waits for the rest of its bracket
    lmt_price_offset: Decimal | None = None  # TRAIL LIMIT: limit = stop -/+ offset once triggered
    algo_strategy: str = ""
    awaiting_open: bool = False  # accepted while the market is closed: PreSubmitted until it may trade
    good_till_date: str = ""  # GTD: as sent, echoed in openOrder
    expires_at: datetime | None = None  # GTD: the goodTillDate; DAY: the end of its session (exchange hours)

    @property
    def remaining(self) -> Decimal:
        return self.total_qty - self.filled if self.status in WORKING or self.status == "Filled" else D0

    @property
    def working(self) -> bool:
        return self.status in WORKING


@dataclass
class SimExecution:
    exec_id: str
    order: SimOrder
    shares: Decimal
    price: Decimal
    time: datetime
    commission: Decimal
    realized: Decimal
    cum_qty: Decimal
    avg_price: Decimal
    extra: dict = field(default_factory=dict)

    @property
    def side(self) -> str:
        return "BOT" if self.order.action == "BUY" else "SLD"


class OrderSink(Protocol):
    def order_changed(self, order: SimOrder) -> None: ...
    def filled(self, order: SimOrder, execution: SimExecution) -> None: ...
    def cancelled(self, order: SimOrder, code: int, message: str) -> None: ...
    def warn(self, order: SimOrder, code: int, message: str) -> None: ...


class Reject(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def good_till(text: str) -> datetime:
    """A goodTillDate: 'YYYYMMDD HH:MM:SS[ TZ]' (no zone: the login time zone, UTC here) or
    'YYYYMMDD-HH:MM:SS' (UTC). ValueError when it is neither."""
    text = text.strip()
    if "-" in text and " " not in text:
        return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    parts = text.split()
    if len(parts) not in (2, 3):
        raise ValueError(text)
    try:
        tz = ZoneInfo(parts[2]) if len(parts) == 3 else UTC
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(text) from exc
    return datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)


def stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


class OrderEngine:
    def __init__(
        self,
        market: Market,
        account: Account,
        sink: OrderSink,
        partial_fill_threshold: Decimal | None,
        seed: int,
        sessions: Callable[[Instrument, datetime], SessionState] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.market = market
        self.sessions = sessions  # None: the market never closes
        self.halted: set[int] = set()  # conIds whose trading is halted
        self.clock = clock
        self.account = account
        self.sink = sink
        self.threshold = partial_fill_threshold
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[SimExecution] = []
        self.max_order_id: dict[int, int] = {}
        self._next_perm = 1_000_000 + (seed % 1000) * 10_000
        self._exec_seq = 0
        # IB never reuses an execution id: a gateway started again (same seed, an empty book) must not
        # repeat the ids of the one before, or a client deduplicating by execution id drops new fills.
        self._exec_prefix = f"{(time.time_ns() // 1000 + next(_ENGINES)) & 0xFFFFFFFF:08x}"

    # -- ids
    def next_valid_id(self, client_id: int) -> int:
        return self.max_order_id.get(client_id, 0) + 1

    def new_perm_id(self) -> int:
        self._next_perm += 1
        return self._next_perm

    def note_order_id(self, client_id: int, order_id: int) -> None:
        self.max_order_id[client_id] = max(self.max_order_id.get(client_id, 0), order_id)

    # -- validation
    def validate(self, req: OrderRequest, inst: Instrument) -> None:
        if req.unsupported:
            raise Reject(201, f"Order rejected - reason:{req.unsupported}")
        if req.action not in ("BUY", "SELL"):
            raise Reject(201, f"Order rejected - reason:Invalid action '{req.action}'")
        if req.order_type not in SUPPORTED_TYPES:
            raise Reject(201, f"Order rejected - reason:Invalid order type '{req.order_type}' was entered.")
        if req.tif not in SUPPORTED_TIFS:
            raise Reject(201, f"Order rejected - reason:Invalid time in force '{req.tif}'.")
        # IB error list, 113: the close auction takes day orders only; 111: an opening order (tif OPG) is a
        # market or limit order (market/limit on open), any other type does not go with that time in force.
        if req.tif == "GTD" and req.good_till_date:
            try:
                good_till(req.good_till_date)
            except ValueError:
                raise Reject(201, f"Order rejected - reason:Invalid good till date '{req.good_till_date}'.") from None
        if req.order_type in ("MOC", "LOC") and req.tif != "DAY":
            raise Reject(113, "The Tif option should be set to DAY for MOC and LOC orders.")
        if req.tif == "OPG" and req.order_type not in ("MKT", "LMT"):
            raise Reject(111, "The TIF (Tif type) and the order type are incompatible.")
        # IB error list: 434 "The order size cannot be zero"; 10268-10270 unsupported attributes.
        if req.total_quantity is None or req.total_quantity == 0:
            raise Reject(434, "The order size cannot be zero")
        if req.total_quantity < 0:
            raise Reject(201, "Order rejected - reason:The order quantity must be greater than zero.")
        if req.etrade_only:
            raise Reject(10268, "The 'EtradeOnly' order attribute is not supported.")
        if req.firm_quote_only:
            raise Reject(10269, "The 'firmQuoteOnly' order attribute is not supported.")
        if req.nbbo_price_cap is not None:
            raise Reject(10270, "The 'nbboPriceCap' order attribute is not supported.")
        if not inst.has_quotes:
            raise Reject(201, f"Order rejected - reason:{inst.sec_type} contracts are not tradable.")
        if req.order_type in ("LMT", "STP LMT", "LOC", "LIT") and req.lmt_price is None:
            raise Reject(201, "Order rejected - reason:A limit price is required for this order type.")
        if req.order_type in ("STP", "STP LMT", "MIT", "LIT") and req.aux_price is None:
            raise Reject(201, "Order rejected - reason:A stop price is required for this order type.")
        if req.order_type in ("TRAIL", "TRAIL LIMIT") and req.aux_price is None and req.trailing_percent is None:
            raise Reject(201, "Order rejected - reason:A trailing amount or percent is required.")
        if req.order_type == "TRAIL LIMIT" and req.lmt_price_offset is None and req.lmt_price is None:
            raise Reject(201, "Order rejected - reason:A limit price or limit price offset is required.")
        trailing = req.order_type in ("TRAIL", "TRAIL LIMIT")
        for price in (req.lmt_price, req.aux_price if not trailing and req.order_type != "REL" else None):
            if price is not None and round_to_tick(price, inst.min_tick) != price:
                raise Reject(110, "The price does not conform to the minimum price variation for this contract.")
        if req.account and req.account != self.account.code:
            raise Reject(201, f"Order rejected - reason:Account {req.account} is not a managed account.")

    # -- lifecycle
    def _new_order(self, client_id: int, req: OrderRequest, inst: Instrument, **extra) -> SimOrder:
        return SimOrder(
            order_id=req.order_id,
            client_id=client_id,
            perm_id=self.new_perm_id(),
            inst=inst,
            exchange=req.contract.exchange or inst.exchange,
            action=req.action,
            total_qty=req.total_quantity or D0,
            order_type=req.order_type,
            lmt_price=req.lmt_price,
            aux_price=req.aux_price,
            tif=req.tif,
            order_ref=req.order_ref,
            outside_rth=req.outside_rth,
            account=self.account.code,
            **extra,
        )

    def place(self, client_id: int, req: OrderRequest, inst: Instrument) -> SimOrder:
        """New order (already validated and id-checked); reports PreSubmitted, Submitted, fills."""
        o = self._new_order(
            client_id,
            req,
            inst,
            oca_group=req.oca_group,
            oca_type=req.oca_type,
            parent_id=req.parent_id,
            trailing_percent=req.trailing_percent,
            trail_stop=req.trail_stop_price,
            lmt_price_offset=req.lmt_price_offset,
            algo_strategy=req.algo_strategy,
        )
        self.orders[(client_id, o.order_id)] = o
        self.note_order_id(client_id, o.order_id)
        self._set_expiry(o, req.good_till_date)
        self.sink.order_changed(o)  # PreSubmitted
        if self._expired(o):  # a goodTillDate already past: cancelled before it can trade
            self._cancel(o, 202, "Order Canceled - reason:The good till date has already passed.")
            return o
        if not req.transmit:
            o.held = True  # like TWS: kept until an order of its bracket arrives with transmit=True
            return o
        for member in self._bracket_to_release(o):
            member.held = False
            self._activate(member)
        return o

    def _set_expiry(self, o: SimOrder, good_till_date: str) -> None:
        """GTD orders expire at their goodTillDate (one without a date does not expire); DAY orders, with
        exchange hours, at the end of the session they were placed in or for (never with hours "always")."""
        o.good_till_date = good_till_date if o.tif == "GTD" else ""
        if o.good_till_date:
            o.expires_at = good_till(o.good_till_date)
        elif o.tif == "DAY" and self.sessions is not None:
            o.expires_at = session_end(o.inst, self.clock(), o.outside_rth)
        else:
            o.expires_at = None

    def _expired(self, o: SimOrder) -> bool:
        return o.expires_at is not None and self.clock() >= o.expires_at

    def expire(self) -> None:
        """Cancel the working orders whose time in force has run out (GTD date reached, DAY session over)."""
        for o in list(self.orders.values()):
            if o.working and self._expired(o):
                reason = "GTD order expired" if o.tif == "GTD" else "DAY order expired at the end of the session"
                self._cancel(o, 202, f"Order Canceled - reason:{reason}")

    def _bracket_to_release(self, o: SimOrder) -> list[SimOrder]:
        """The order plus the held parent and held siblings it transmits (parent first)."""
        if not o.parent_id:
            return [o]
        parent = self.orders.get((o.client_id, o.parent_id))
        siblings = [x for x in self.orders.values() if x.client_id == o.client_id and x.parent_id == o.parent_id]
        return [x for x in [parent, *siblings] if x is not None and (x.held or x is o)]

    def _waits_for_parent(self, o: SimOrder) -> bool:
        parent = self.orders.get((o.client_id, o.parent_id)) if o.parent_id else None
        return parent is not None and parent.status != "Filled"

    def _activate(self, o: SimOrder) -> None:
        """Submitted and evaluated, unless it is a child whose parent has not filled yet."""
        if o.held or not o.working or self._waits_for_parent(o):
            return
        if o.outside_rth and o.order_type not in OUTSIDE_RTH_TYPES and self.sessions is not None:
            # IB error list, 2109: outsideRth does not apply to this order type; it waits for the session.
            self.sink.warn(
                o,
                2109,
                "Order Event Warning:Attribute 'Outside Regular Trading Hours' is ignored based on the order type "
                "and destination. PlaceOrder is now being processed.",
            )
        state = self._session(o)
        if state is not None and not self._may_trade(o, state) and not self._waits_for_auction(o):
            # IB error list, 399: accepted, but held until the exchange opens (status stays PreSubmitted).
            o.awaiting_open = True
            when = state.next_open.astimezone(ZoneInfo(o.inst.time_zone)) if state.next_open else None
            self.sink.warn(
                o,
                399,
                f"Order Message:\n{o.action} {o.total_qty} {o.inst.local_symbol}\nWarning: your order will not be "
                "placed at the exchange until "
                + (f"{when:%Y-%m-%d %H:%M:%S} {o.inst.time_zone}" if when else "the market opens"),
            )
            if o.tif in ("IOC", "FOK"):
                self._cancel(o, 202, f"Order Canceled - reason:{o.tif} order cannot trade while the market is closed")
            return
        o.status = "Submitted"
        self.sink.order_changed(o)
        self._after_submit(o)

    def _session(self, o: SimOrder) -> SessionState | None:
        return None if self.sessions is None else self.sessions(o.inst, self.clock())

    def _may_trade(self, o: SimOrder, state: SessionState | None) -> bool:
        if o.inst.con_id in self.halted or o.inst.under_con_id in self.halted:
            return False
        if state is None or state.regular:
            return True
        return o.outside_rth and o.order_type in OUTSIDE_RTH_TYPES and state.extended

    def modify(self, o: SimOrder, req: OrderRequest, inst: Instrument) -> None:
        """Re-placing a working order under its id: IB lets price, quantity, time in force and the like change,
        but not the side, the contract or the order type (105); a held order re-placed with transmit=True is
        transmitted."""
        self.check_same_order(o, req, inst)
        if req.total_quantity is not None and req.total_quantity < o.filled:
            raise Reject(201, "Order rejected - reason:The new quantity is below the filled quantity.")
        o.total_qty = req.total_quantity or o.total_qty
        o.order_type, o.lmt_price, o.aux_price = req.order_type, req.lmt_price, req.aux_price
        tif_changed = (req.tif, req.good_till_date, req.outside_rth) != (o.tif, o.good_till_date, o.outside_rth)
        o.tif, o.order_ref, o.outside_rth = req.tif, req.order_ref, req.outside_rth
        if tif_changed:
            self._set_expiry(o, req.good_till_date)
        o.trailing_percent = req.trailing_percent
        if req.trail_stop_price is not None:
            o.trail_stop = req.trail_stop_price
        self.sink.order_changed(o)
        if o.held:
            if req.transmit:  # like TWS: transmitting a held order sends it (and the bracket it holds back)
                for member in self._bracket_to_release(o):
                    member.held = False
                    self._activate(member)
            return
        self._after_submit(o)

    @staticmethod
    def check_same_order(o: SimOrder, req: OrderRequest, inst: Instrument) -> None:
        if req.action != o.action or inst.con_id != o.inst.con_id or req.order_type != o.order_type:
            # IB error list, 105; the order stays as it was.
            raise Reject(105, "Order being modified does not match original order")

    def _after_submit(self, o: SimOrder) -> None:
        if o.tif == "FOK":
            q = self.market.quote(o.inst.con_id)
            whole = self.threshold is None or o.remaining <= self.threshold
            if not (whole and self._fill_price(o, q) is not None and not self._waits_for_auction(o)):
                self._cancel(o, 202, "Order Canceled - reason:FOK order could not be filled in full immediately")
                return
            self._fill(o, o.remaining, self._fill_price(o, q))  # type: ignore[arg-type]
            return
        self._evaluate(o)
        if o.tif == "IOC" and o.working:
            self._cancel(o, 202, "Order Canceled - reason:IOC order remainder cancelled")

    def cancel(self, client_id: int, order_id: int) -> None:
        o = self.orders.get((client_id, order_id))
        if o is None:
            raise Reject(10147, f"OrderId {order_id} that needs to be cancelled is not found.")
        if not o.working:
            raise Reject(
                10148, f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {o.status}."
            )
        self._cancel(o, 202, "Order Canceled - reason:")

    def cancel_all(self) -> None:
        for o in list(self.orders.values()):
            if o.working:
                self._cancel(o, 202, "Order Canceled - reason:Global cancel")

    def _cancel(self, o: SimOrder, code: int, message: str) -> None:
        o.status = "Cancelled"
        o.completed_time, o.completed_status = stamp(datetime.now(UTC)), "Cancelled by Trader"
        self.sink.cancelled(o, code, message)
        for child in self._children(o):  # a cancelled parent takes its bracket with it
            if child.working:
                self._cancel(child, 202, "Order Canceled - reason:Parent order cancelled")

    def _reduce(self, o: SimOrder, qty: Decimal) -> None:
        """OCA types 2 and 3: a fill elsewhere in the group takes ``qty`` off this order's size."""
        o.total_qty = max(o.filled, o.total_qty - qty)
        if o.total_qty <= o.filled:
            self._cancel(o, 202, "Order Canceled - reason:OCA group member filled")
        else:
            self.sink.order_changed(o)

    def _children(self, o: SimOrder) -> list[SimOrder]:
        return [x for x in self.orders.values() if x.client_id == o.client_id and x.parent_id == o.order_id]

    def reject_record(self, client_id: int, req: OrderRequest, inst: Instrument | None) -> SimOrder | None:
        """Keep rejected orders visible as Inactive (they still consume the order id)."""
        self.note_order_id(client_id, req.order_id)
        if inst is None or (client_id, req.order_id) in self.orders:
            return None
        o = self._new_order(client_id, req, inst, status="Inactive")
        o.completed_time, o.completed_status = stamp(datetime.now(UTC)), "Rejected"
        self.orders[(client_id, req.order_id)] = o
        return o

    # -- evaluation
    def evaluate_all(self) -> None:
        self.expire()
        for o in list(self.orders.values()):
            if o.awaiting_open and o.working and self._may_trade(o, self._session(o)):
                o.awaiting_open = False
                o.status = "Submitted"
                self.sink.order_changed(o)
            if o.working:
                self._evaluate(o)

    def market_close(self) -> None:
        self.market.close_session()
        for o in list(self.orders.values()):
            if o.working and o.order_type in ("MOC", "LOC"):
                close = self.market.quote(o.inst.con_id).last
                if o.order_type == "LOC" and not self._limit_ok(o, close):
                    self._cancel(o, 202, "Order Canceled - reason:LOC limit not reached at the close")
                else:
                    self._fill(o, o.remaining, close)

    def market_open(self) -> None:
        for o in list(self.orders.values()):
            if o.working and o.tif == "OPG":
                price = self._fill_price(o, self.market.quote(o.inst.con_id), ignore_auction=True)
                if price is None:
                    self._cancel(o, 202, "Order Canceled - reason:OPG order not filled at the open")
                else:
                    self._fill(o, o.remaining, price)

    @staticmethod
    def _waits_for_auction(o: SimOrder) -> bool:
        return o.order_type in ("MOC", "LOC") or o.tif == "OPG"

    def _limit_ok(self, o: SimOrder, price: Decimal) -> bool:
        assert o.lmt_price is not None
        return price <= o.lmt_price if o.action == "BUY" else price >= o.lmt_price

    def _triggered(self, o: SimOrder, last: Decimal) -> bool:
        if o.triggered or o.order_type not in ("STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIT", "LIT"):
            return True
        buy = o.action == "BUY"
        if o.order_type in ("MIT", "LIT"):  # if-touched: a buy triggers at or below its trigger price
            assert o.aux_price is not None
            o.triggered = last <= o.aux_price if buy else last >= o.aux_price
            return o.triggered
        if o.order_type in ("TRAIL", "TRAIL LIMIT"):
            if o.trailing_percent is not None:
                offset = last * o.trailing_percent / 100
            else:
                offset = o.aux_price or D0
            candidate = round_to_tick(last + offset if buy else last - offset, o.inst.min_tick)
            if o.trail_stop is None:
                o.trail_stop = candidate
            else:
                o.trail_stop = min(o.trail_stop, candidate) if buy else max(o.trail_stop, candidate)
            stop = o.trail_stop
        else:
            assert o.aux_price is not None
            stop = o.aux_price
        o.triggered = last >= stop if buy else last <= stop
        if o.triggered and o.order_type == "TRAIL LIMIT" and o.lmt_price_offset is not None:
            o.lmt_price = round_to_tick(
                stop + o.lmt_price_offset if buy else stop - o.lmt_price_offset, o.inst.min_tick
            )
        return o.triggered

    def _fill_price(self, o: SimOrder, q, ignore_auction: bool = False) -> Decimal | None:
        if not ignore_auction and self._waits_for_auction(o):
            return None
        if not self._triggered(o, q.last):
            return None
        buy = o.action == "BUY"
        price = q.ask if buy else q.bid
        if o.order_type == "MIDPRICE":  # the midpoint or better (rounded in the trader's favour), capped
            tick = o.inst.min_tick
            mid = (q.bid + q.ask) / 2 / tick
            price = (mid.to_integral_value(ROUND_FLOOR if buy else ROUND_CEILING) * tick).quantize(tick)
            if o.lmt_price is not None:
                price = min(price, o.lmt_price) if buy else max(price, o.lmt_price)
            return price
        if o.order_type == "REL":  # pegged to the same-side quote plus the offset, capped by the limit
            offset = o.aux_price or D0
            price = q.bid + offset if buy else q.ask - offset
            if o.lmt_price is not None:
                price = min(price, o.lmt_price) if buy else max(price, o.lmt_price)
            return price
        if o.order_type in LIMITED and (o.lmt_price is None or not self._limit_ok(o, price)):
            return None
        return price

    def _evaluate(self, o: SimOrder) -> None:
        if o.held or o.awaiting_open or self._waits_for_parent(o):
            return
        if not self._may_trade(o, self._session(o)):
            return  # rests until the exchange opens (or the halt ends)
        price = self._fill_price(o, self.market.quote(o.inst.con_id))
        if price is None:
            return
        qty = o.remaining if self.threshold is None else min(o.remaining, self.threshold)
        self._fill(o, qty, price)

    def _fill(self, o: SimOrder, qty: Decimal, price: Decimal) -> None:
        now = datetime.now(UTC)
        fx = self.account.fx(o.inst.currency)
        commission = commission_for(o.inst, qty, price, fx)
        realized = self.account.apply_fill(o.inst, o.action, qty, price, commission)
        o.avg_fill_price = (o.avg_fill_price * o.filled + price * qty) / (o.filled + qty)
        o.filled += qty
        o.last_fill_price = price
        if o.filled >= o.total_qty:
            o.status = "Filled"
            o.completed_time, o.completed_status = stamp(now), f"Filled Size: {o.filled}"
        self._exec_seq += 1
        ex = SimExecution(
            exec_id=f"{self._exec_prefix}.{o.perm_id:08x}.{self._exec_seq:02d}.01",
            order=o,
            shares=qty,
            price=price,
            time=now,
            commission=commission,
            realized=realized,
            cum_qty=o.filled,
            avg_price=o.avg_fill_price,
        )
        self.executions.append(ex)
        self.sink.filled(o, ex)
        # OCA groups, by the filled order's ocaType (IB's Order.ocaType): 1 (or not set) cancels the rest of
        # the group at the first fill; 2 and 3 reduce each other order of the group by the quantity filled,
        # and one reduced to nothing is cancelled. (IB's "with block" of types 1 and 2 guards against
        # overfills while orders are routed; here fills are immediate, so 2 and 3 act alike.) As at IB, the
        # exits of one bracket, the children of one parent, are one cancelling group even without an ocaGroup.
        for other in list(self.orders.values()):
            if other is o or not other.working or other.client_id != o.client_id:
                continue
            if o.oca_group and other.oca_group == o.oca_group:
                if o.oca_type in (2, 3):
                    self._reduce(other, qty)
                else:
                    self._cancel(other, 202, "Order Canceled - reason:OCA group member filled")
            elif o.parent_id and other.parent_id == o.parent_id:
                self._cancel(other, 202, "Order Canceled - reason:OCA group member filled")
        if o.status == "Filled":
            for child in self._children(o):
                self._activate(child)
