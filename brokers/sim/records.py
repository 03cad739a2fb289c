"""What the simulator received and did, as frozen records for tests (read through SimGateway)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class SimOrderRecord:
    client_id: int
    order_id: int
    perm_id: int | None
    con_id: int
    symbol: str
    sec_type: str
    action: str
    total_quantity: Decimal | None
    order_type: str
    lmt_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    order_ref: str
    what_if: bool
    outside_rth: bool
    account: str  # as sent: empty when the client named none
    parent_id: int  # 0: not a child order
    transmit: bool  # False: held until an order of its bracket arrives with transmit=True
    received_at: datetime


@dataclass(frozen=True)
class SimCancelRecord:
    client_id: int
    order_id: int | None  # None for reqGlobalCancel
    received_at: datetime


@dataclass(frozen=True)
class OrderStateRecord:
    order_id: int
    client_id: int
    perm_id: int
    order_ref: str
    status: str
    filled: Decimal
    remaining: Decimal
    avg_fill_price: Decimal
    con_id: int
    action: str
    order_type: str
    total_quantity: Decimal


@dataclass(frozen=True)
class ExecutionRecord:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    order_ref: str
    con_id: int
    side: str  # BOT / SLD
    shares: Decimal
    price: Decimal
    time: datetime
    commission: Decimal
    realized_pnl: Decimal
