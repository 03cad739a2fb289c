"""Encoders for server -> client messages, with the server-version branches ib_async decodes.

Each function returns the field list (msgId first); protocol.encode() frames it.
Field layouts: docs/tws-protocol.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .account import Account, Position
from .book import SimExecution, SimOrder, stamp
from .calendar import trading_hours
from .protocol import UNSET_DOUBLE, UNSET_INT
from .universe import Instrument

Fields = list[Any]
Q8 = Decimal("0.00000001")
NO_SECDEF = "No security definition has been found for the request"


def _px(d: Decimal | None) -> Any:
    return UNSET_DOUBLE if d is None else d.quantize(Q8).normalize()


def _order_px(d: Decimal | None) -> Any:
    """An order's lmtPrice and auxPrice in openOrder and completedOrder: TWS reports a price the order does not
    have (a market order's limit, a limit order's stop) as 0, not as unset."""
    return 0 if d is None else _px(d)


def _strike(inst: Instrument) -> Any:
    return inst.strike if inst.strike else "0"


def contract11(inst: Instrument, exchange: str) -> Fields:
    """conId … tradingClass as used in openOrder/completedOrder/execDetails (no primaryExchange)."""
    return [
        inst.con_id,
        inst.symbol,
        inst.sec_type,
        inst.last_trade_date,
        _strike(inst),
        inst.right,
        inst.multiplier,
        exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class,
    ]


def error(version: int, req_id: int, code: int, message: str) -> Fields:
    fields: Fields = [4, 2, req_id, code, message]
    if version >= 166:
        fields.append("")  # advancedOrderRejectJson
    return fields


def contract_data(version: int, req_id: int, inst: Instrument, exchange: str, today) -> Fields:
    ltd = inst.last_trade_date
    if inst.sec_type in ("FUT", "OPT"):
        close_time = "16:00:00" if inst.sec_type == "OPT" else "09:30:00"
        ltd = f"{ltd} {close_time} {inst.time_zone}"
    f: Fields = [10]
    if version < 164:
        f.append(8)
    f += [
        req_id,
        inst.symbol,
        inst.sec_type,
        ltd,
        _strike(inst),
        inst.right,
        exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class or inst.symbol,
        inst.trading_class,
        inst.con_id,
        inst.min_tick,
    ]
    if version < 164:
        f.append(1)  # mdSizeMultiplier
    order_types = (
        "ACTIVETIM,AD,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,GAT,GTC,GTD,IOC,LIT,"
        "LMT,LOC,MIT,MKT,MOC,MTL,NONALGO,OCA,OPG,PEGMID,SCALE,STP,STPLMT,TRAIL,WHATIF"
    )
    f += [
        inst.multiplier,
        order_types,
        ",".join(inst.valid_exchanges),
        1,
        inst.under_con_id,
        ascii_escape(inst.long_name),
        inst.primary_exchange,
        inst.contract_month,
        inst.industry,
        inst.category,
        inst.subcategory,
        inst.time_zone,
        trading_hours(inst, today, False),
        trading_hours(inst, today, True),
        "",
        "",
        len(inst.sec_ids),
    ]
    for tag, value in inst.sec_ids:
        f += [tag, value]
    f += [
        1,
        inst.under_symbol,
        inst.under_sec_type,
        "26" if inst.sec_type == "STK" else "32",
        inst.last_trade_date,
        inst.stock_type,
    ]
    if version == 163:
        f.append("100")
    if version >= 164:  # size rules: US stocks trade in fractions down to 0.0001 share, the rest in whole units
        f += ["0.0001", "0.0001", "100"] if inst.sec_type == "STK" else ["1", "1", "1"]
    return f


def bond_contract_data(version: int, req_id: int, inst: Instrument, exchange: str) -> Fields:
    f: Fields = [18]
    if version < 164:
        f.append(6)
    # coupon goes out blank: ib_async 2.1 declares ContractDetails.coupon with an int default
    # and int("4.25") would make it drop the whole message; the coupon is in descAppend instead.
    f += [
        req_id,
        inst.symbol,
        inst.sec_type,
        inst.cusip,
        "",
        inst.maturity,
        inst.issue_date,
        "AA+",
        "FIXED",
        "FIXED",
        0,
        0,
        0,
        f"{inst.coupon.normalize()} {inst.maturity}",
        exchange,
        inst.currency,
        inst.trading_class,
        inst.trading_class,
        inst.con_id,
        inst.min_tick,
    ]
    if version < 164:
        f.append(1)
    f += [
        "LMT,MKT,GTC,DAY",
        ",".join(inst.valid_exchanges),
        "",
        "",
        0,
        "",
        ascii_escape(inst.long_name),
        "",
        "",
        len(inst.sec_ids),
    ]
    for tag, value in inst.sec_ids:
        f += [tag, value]
    f += [1, "90"]
    if version >= 164:
        f += ["1", "1", "1"]
    return f


def ascii_escape(text: str) -> str:
    """ib_async un-escapes longName with unicode-escape; send ASCII only (§6.3)."""
    return text.encode("ascii", "backslashreplace").decode()


def order_status(o: SimOrder) -> Fields:
    return [
        3,
        o.order_id,
        o.status,
        o.filled,
        o.remaining,
        _px(o.avg_fill_price),
        o.perm_id,
        o.parent_id,
        _px(o.last_fill_price),
        o.client_id,
        "",
        0,
    ]


def oca_type(o: SimOrder) -> int:
    """The ocaType openOrder reports: as sent; not set, 1 in an OCA group (how it acts) and TWS's 3 outside one."""
    return o.oca_type or (1 if o.oca_group else 3)


def open_order(version: int, o: SimOrder, what_if: dict[str, Any] | None = None) -> Fields:
    """openOrder (5); ``what_if`` carries the OrderState margin/commission figures."""
    st = what_if or {}
    margins = [
        st.get(k, UNSET_DOUBLE)
        for k in (
            "init_before",
            "maint_before",
            "ewl_before",
            "init_change",
            "maint_change",
            "ewl_change",
            "init_after",
            "maint_after",
            "ewl_after",
        )
    ]
    trail = _px(o.trail_stop) if o.order_type == "TRAIL" else UNSET_DOUBLE
    f: Fields = [
        5,
        o.order_id,
        *contract11(o.inst, o.exchange),
        o.action,
        o.total_qty,
        o.order_type,
        _order_px(o.lmt_price),
        _order_px(o.aux_price),
        o.tif,
        o.oca_group,
        o.account,
        "",
        0,
        o.order_ref,
        o.client_id,
        o.perm_id,
        o.outside_rth,
        0,
        0,
        "",
        "",
        "",
        "",
        "",
    ]  # sharesAllocation, faGroup, faMethod, faPercentage
    if version < 177:
        f.append("")  # faProfile
    f += [
        "",
        o.good_till_date,
        "",
        "",
        "",
        0,
        "",
        -1,
        0,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        0,
        0,
        0,
        0,
        UNSET_INT,
        oca_type(o),
        0,
        0,
        UNSET_DOUBLE,
        o.parent_id,
        0,
        UNSET_DOUBLE,
        0,
        "",
        UNSET_DOUBLE,
    ]
    f += [
        0,
        0,
        trail,
        _px(o.trailing_percent),
        UNSET_DOUBLE,
        UNSET_INT,
        "",
        0,
        0,
        0,
        "",
        "",
        "",
        "",
        0,
        "",
        "",
        0,
        0,
        "",
        0,
        int(what_if is not None),
        o.status,
        *margins,
        st.get("commission", UNSET_DOUBLE),
        st.get("min_commission", UNSET_DOUBLE),
        st.get("max_commission", UNSET_DOUBLE),
        st.get("commission_currency", ""),
        o.warning,
        0,
        0,
        0,
    ]
    f += [
        "",
        UNSET_DOUBLE,
        trail,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        0,
        "",
        "",
        "",
        UNSET_DOUBLE,
        0,
        0,
        0,
        0,
    ]
    if version >= 159:
        f.append(UNSET_INT)  # duration
    if version >= 160:
        f.append(UNSET_INT)  # postToAts
    if version >= 162:
        f.append(0)  # autoCancelParent
    if version >= 170:
        f += [UNSET_INT, UNSET_INT, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
    return f


def completed_order(version: int, o: SimOrder) -> Fields:
    trail = _px(o.trail_stop) if o.order_type == "TRAIL" else UNSET_DOUBLE
    f: Fields = [
        101,
        *contract11(o.inst, o.exchange),
        o.action,
        o.total_qty,
        o.order_type,
        _order_px(o.lmt_price),
        _order_px(o.aux_price),
        o.tif,
        o.oca_group,
        o.account,
        "",
        0,
        o.order_ref,
        o.perm_id,
        o.outside_rth,
        0,
        0,
        "",
        "",
        "",
        "",
    ]
    if version < 177:
        f.append("")  # faProfile
    f += [
        "",
        o.good_till_date,
        "",
        "",
        "",
        0,
        "",
        -1,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        0,
        0,
        0,
        UNSET_INT,
        oca_type(o),
        0,
        UNSET_DOUBLE,
        0,
        "",
        UNSET_DOUBLE,
    ]
    f += [0, 0, trail, _px(o.trailing_percent), "", 0, 0, 0, "", "", "", "", "", "", 0, 0, "", 0, o.status, 0, 0, 0]
    f += [
        trail,
        UNSET_DOUBLE,
        UNSET_DOUBLE,
        0,
        0,
        "",
        o.filled,
        0,
        0,
        "",
        0,
        0,
        UNSET_INT,
        o.completed_time,
        o.completed_status,
    ]
    if version >= 170:
        f += [UNSET_INT, UNSET_INT, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
    return f


def exec_details(version: int, req_id: int, ex: SimExecution, account: str) -> Fields:
    o = ex.order
    f: Fields = [
        11,
        req_id,
        o.order_id,
        *contract11(o.inst, o.exchange),
        ex.exec_id,
        stamp(ex.time),
        account,
        (o.inst.primary_exchange or o.inst.exchange) if o.exchange == "SMART" else o.exchange,
        ex.side,
        ex.shares,
        _px(ex.price),
        o.perm_id,
        o.client_id,
        0,
        ex.cum_qty,
        _px(ex.avg_price),
        o.order_ref,
        "",
        "",
        "",
        1,
    ]
    if version >= 178:
        f.append(0)  # pendingPriceRevision
    return f


def commission_report(ex: SimExecution) -> Fields:
    realized = ex.realized if ex.realized else UNSET_DOUBLE
    return [59, 1, ex.exec_id, ex.commission, "USD", realized, UNSET_DOUBLE, ""]


def position(account: str, p: Position) -> Fields:
    i = p.inst
    return [
        61,
        3,
        account,
        i.con_id,
        i.symbol,
        i.sec_type,
        i.last_trade_date,
        _strike(i),
        i.right,
        i.multiplier,
        i.exchange if i.sec_type != "STK" else i.primary_exchange,
        i.currency,
        i.local_symbol,
        i.trading_class,
        p.qty,
        _px(p.avg_price * i.value_multiplier),
    ]


def position_multi(req_id: int, account: str, p: Position) -> Fields:
    f = position(account, p)
    return [71, 1, req_id, *f[2:], ""]


def portfolio(acct: Account, p: Position) -> Fields:
    i = p.inst
    mark = acct.mark(i)
    fx = acct.fx(i.currency)
    value = (p.qty * mark * i.value_multiplier).quantize(Decimal("0.01"))
    unreal = (acct.unrealized(p) / fx).quantize(Decimal("0.01"))
    return [
        7,
        8,
        i.con_id,
        i.symbol,
        i.sec_type,
        i.last_trade_date,
        _strike(i),
        i.right,
        i.multiplier,
        i.primary_exchange or i.exchange,
        i.currency,
        i.local_symbol,
        i.trading_class,
        p.qty,
        _px(mark),
        value,
        _px(p.avg_price * i.value_multiplier),
        unreal,
        (p.realized / fx).quantize(Decimal("0.01")),
        acct.code,
    ]
