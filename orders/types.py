"""The order request every door accepts, as plain frozen data."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from ibkrgw.actors import Actor

ACTIONS = ("BUY", "SELL", "SELL_SHORT", "BUY_TO_COVER")
ORDER_TYPES = ("MKT", "LMT", "STP", "STP_LMT", "MOC", "LOC", "TRAIL", "TRAIL_LIMIT")
TIFS = ("DAY", "GTC", "IOC", "FOK", "OPG")
# Our names -> IB's wire names.
IB_ORDER_TYPE = {"STP_LMT": "STP LMT", "TRAIL_LIMIT": "TRAIL LIMIT"}
IB_ACTION = {"BUY": "BUY", "BUY_TO_COVER": "BUY", "SELL": "SELL", "SELL_SHORT": "SELL"}
# What an order does, apart from its contract, account and key: one list, so that the duplicate window and
# an order row's request never disagree on what "the same order" means.
ORDER_TERMS = (
    "action",
    "quantity",
    "order_type",
    "limit_price",
    "stop_price",
    "trail_amount",
    "trail_percent",
    "tif",
    "outside_rth",
)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    symbol: str
    action: str
    quantity: Decimal
    order_type: str
    sec_type: str = "STK"
    exchange: str = ""
    currency: str = ""
    primary_exchange: str = ""
    expiry: str = ""
    strike: Decimal | None = None
    right: str = ""
    multiplier: str = ""
    con_id: int | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    tif: str = "DAY"
    outside_rth: bool = False
    account: str = ""
    client_order_id: str = ""
    take_profit: Decimal | None = None  # bracket: a limit exit at this price
    stop_loss: Decimal | None = None  # bracket: a stop exit at this price

    @property
    def is_bracket(self) -> bool:
        return self.take_profit is not None or self.stop_loss is not None

    def canonical(self) -> dict[str, Any]:
        """The request as compared for idempotency: normalised, without the key itself."""
        # A flat dataclass of plain values: no deep copy needed (asdict would copy every field).
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "client_order_id"}
        return {k: (format(v.normalize(), "f") if isinstance(v, Decimal) else v) for k, v in data.items()}


@dataclass(frozen=True)
class OrderSent:
    """The broker acknowledged an order: recorded by the recorder thread, the ledger's single writer
    of broker events. `written` is set once the event is committed."""

    order_id: uuid.UUID
    broker_order_id: int
    perm_id: int | None
    client_id: int
    actor: Actor
    written: threading.Event = field(default_factory=threading.Event, compare=False)
    order: Any = field(default=None, compare=False, repr=False)  # the committed Order row that was sent
    # IB's permanent id as known when the acknowledgement is written (the broker's first report brings it).
    perm_id_now: Callable[[], int | None] | None = field(default=None, compare=False, repr=False)
    connection: str = ""  # the broker connection it went out on
