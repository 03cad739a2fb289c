"""ib_async objects -> our frozen dataclasses.

IB marks missing values with NaN, -1, 0 sizes, UNSET_DOUBLE (1.797e308) or UNSET_INTEGER;
all of them become `None` here so nothing downstream sees a sentinel or crashes on one.
Prices become `Decimal` via their shortest repr (190.03, not 190.030000000000001).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from ib_async import Contract, ContractDetails, Ticker
from ib_async.util import UNSET_DOUBLE, UNSET_INTEGER

from brokers.adapter import (
    AccountValue,
    Bar,
    BrokerCommission,
    BrokerExecution,
    BrokerOrderStatus,
    ContractInfo,
    ContractSpec,
    OrderPreview,
    PnLInfo,
    PositionInfo,
    Quote,
)
from brokers.ib.errors import OrderError
from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.limits import wire_unsafe_reason


def dec(value: Any) -> Decimal | None:
    """A finite, set number as Decimal; every IB sentinel as None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return None if value == UNSET_INTEGER else Decimal(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value) or value >= UNSET_DOUBLE or value <= -UNSET_DOUBLE:
            return None
        return Decimal(repr(value))
    try:
        parsed = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not parsed.is_finite() or abs(parsed) >= Decimal(UNSET_DOUBLE):
        return None
    return parsed


def price(value: Any) -> Decimal | None:
    """Prices: IB sends -1 (and 0 for some ticks) when there is no price."""
    d = dec(value)
    return None if d is None or d == -1 else d


def size(value: Any) -> Decimal | None:
    d = dec(value)
    return None if d is None or d < 0 else d


def utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=UTC)
    return None


# The ContractSpec/ContractInfo fields that to_ib_contract puts on the wire.
_SENT_CONTRACT_FIELDS = (
    "symbol",
    "sec_type",
    "exchange",
    "primary_exchange",
    "currency",
    "expiry",
    "right",
    "multiplier",
    "local_symbol",
    "trading_class",
)


def refuse_unsafe_fields(what: str, **values: Any) -> None:
    """Last line of defence before ib_async: a NUL is the wire's field separator and any control
    character (or lone surrogate) has no business in an IB field. Inputs are validated long before
    this; reaching here means a door missed one, so refuse clearly rather than corrupt the stream."""
    for name, value in values.items():
        if isinstance(value, str):
            reason = wire_unsafe_reason(value)
            if reason:
                raise GatewayError(
                    ErrorCode.INVALID_REQUEST,
                    f"The {what} field {name!r} contains a {reason}; nothing was sent to the broker.",
                    details={"field": name, "reason": "control_character"},
                )


def to_ib_contract(info: ContractInfo | ContractSpec) -> Contract:
    refuse_unsafe_fields("contract", **{name: getattr(info, name, None) for name in _SENT_CONTRACT_FIELDS})
    c = Contract()
    if info.con_id:
        c.conId = int(info.con_id)
    c.symbol = info.symbol or ""
    c.secType = info.sec_type or ""
    c.exchange = info.exchange or ""
    c.primaryExchange = info.primary_exchange or ""
    c.currency = info.currency or ""
    c.lastTradeDateOrContractMonth = info.expiry or ""
    if info.strike is not None:
        c.strike = float(info.strike)
    c.right = info.right or ""
    c.multiplier = info.multiplier or ""
    c.localSymbol = info.local_symbol or ""
    c.tradingClass = info.trading_class or ""
    return c


def contract_info(c: Contract, details: ContractDetails | None = None) -> ContractInfo:
    strike = dec(c.strike)
    return ContractInfo(
        con_id=int(c.conId),
        symbol=c.symbol,
        sec_type=c.secType,
        exchange=c.exchange,
        currency=c.currency,
        primary_exchange=c.primaryExchange or "",
        expiry=c.lastTradeDateOrContractMonth or "",
        strike=strike if strike else None,
        right=c.right or "",
        multiplier=c.multiplier or "",
        local_symbol=c.localSymbol or "",
        trading_class=c.tradingClass or "",
        long_name=(details.longName if details else "") or "",
        min_tick=dec(details.minTick) if details else None,
        time_zone=(details.timeZoneId if details else "") or "",
        trading_hours=(details.tradingHours if details else "") or "",
        liquid_hours=(details.liquidHours if details else "") or "",
        min_size=(dec(details.minSize) or None) if details else None,  # 0: not reported (older gateways)
        size_increment=(dec(details.sizeIncrement) or None) if details else None,
    )


def quote(ticker: Ticker, *, received_at: datetime | None = None) -> Quote:
    c = ticker.contract
    return Quote(
        con_id=int(c.conId) if c else 0,
        symbol=(c.symbol if c else "") or "",
        bid=price(ticker.bid),
        ask=price(ticker.ask),
        last=price(ticker.last),
        bid_size=size(ticker.bidSize),
        ask_size=size(ticker.askSize),
        last_size=size(ticker.lastSize),
        volume=size(ticker.volume),
        close=price(ticker.close),
        high=price(ticker.high),
        low=price(ticker.low),
        time=utc(ticker.time),
        market_data_type=int(ticker.marketDataType or 1),
        received_at=received_at,
        **_greeks(ticker.modelGreeks),
    )


def _greeks(greeks: Any) -> dict[str, Decimal | None]:
    """IB's option model computation (tick 13), when it sent one."""
    if greeks is None:
        return {}
    return {
        "implied_vol": dec(greeks.impliedVol),
        "delta": dec(greeks.delta),
        "gamma": dec(greeks.gamma),
        "vega": dec(greeks.vega),
        "theta": dec(greeks.theta),
        "underlying_price": price(greeks.undPrice),
    }


def bar(b: Any) -> Bar:
    return Bar(
        time=utc(b.date),
        open=dec(b.open),
        high=dec(b.high),
        low=dec(b.low),
        close=dec(b.close),
        volume=size(b.volume),
        wap=price(b.average),
        count=b.barCount if isinstance(b.barCount, int) and b.barCount >= 0 else None,
    )


def account_value(v: Any) -> AccountValue:
    return AccountValue(tag=v.tag, value=v.value, currency=v.currency or "")


def position(p: Any) -> PositionInfo:
    """From an ib_async Position or PortfolioItem."""
    is_portfolio = hasattr(p, "marketPrice")
    return PositionInfo(
        account=p.account,
        contract=contract_info(p.contract),
        quantity=dec(p.position) or Decimal(0),
        average_cost=dec(p.averageCost if is_portfolio else p.avgCost),
        market_price=price(p.marketPrice) if is_portfolio else None,
        market_value=dec(p.marketValue) if is_portfolio else None,
        unrealized_pnl=dec(p.unrealizedPNL) if is_portfolio else None,
        realized_pnl=dec(p.realizedPNL) if is_portfolio else None,
    )


def pnl(account: str, p: Any | None) -> PnLInfo:
    if p is None:
        return PnLInfo(account=account, daily_pnl=None, unrealized_pnl=None, realized_pnl=None)
    return PnLInfo(
        account=account, daily_pnl=dec(p.dailyPnL), unrealized_pnl=dec(p.unrealizedPnL), realized_pnl=dec(p.realizedPnL)
    )


def order_terms(order: Any) -> dict[str, Decimal | None]:
    """The quantity and prices of an IB order, named as the ledger names them."""
    held = {"quantity": dec(order.totalQuantity), "limit_price": price(order.lmtPrice)}
    if order.orderType in ("STP", "STP LMT"):  # elsewhere auxPrice is a trail amount or an offset
        held["stop_price"] = price(order.auxPrice)
    return held


def order_status(
    trade: Any, *, at: datetime | None = None, terms: bool = False, error: OrderError | None = None
) -> BrokerOrderStatus:
    """`terms`: also the quantity and prices, as the broker reported them (a fresh answer, not an order
    this connection has just changed). `error`: IB's error that explains the order's stop."""
    order, st = trade.order, trade.orderStatus
    held: dict[str, Any] = dict(order_terms(order)) if terms else {}  # keyword arguments of the report
    return BrokerOrderStatus(
        **held,
        order_ref=order.orderRef or "",
        broker_order_id=int(order.orderId),
        perm_id=int(order.permId) or None,
        client_id=int(order.clientId) if order.clientId is not None else None,
        status=st.status or "",
        # A completed order (reqCompletedOrders) has no status message: its filled quantity is on the order.
        filled=dec(st.filled) or size(order.filledQuantity) or Decimal(0),
        remaining=dec(st.remaining),
        average_fill_price=price(st.avgFillPrice) or None,
        reason=error.text if error is not None else "",
        error_code=error.code if error is not None else None,
        refused=error.refused if error is not None else False,
        at=at,
    )


def execution(fill: Any) -> BrokerExecution:
    e, c = fill.execution, fill.contract
    return BrokerExecution(
        exec_id=e.execId,
        order_ref=e.orderRef or "",
        broker_order_id=int(e.orderId) if e.orderId else None,
        perm_id=int(e.permId) or None,
        account=e.acctNumber or "",
        con_id=int(c.conId) if c and c.conId else None,
        symbol=(c.symbol if c else "") or "",
        side=e.side,
        quantity=dec(e.shares) or Decimal(0),
        price=dec(e.price) or Decimal(0),
        executed_at=utc(e.time) or datetime.now(UTC),
        exchange=e.exchange or "",
        client_id=int(e.clientId) if e.clientId else None,
    )


def commission(report: Any) -> BrokerCommission | None:
    if not report or not report.execId:
        return None
    amount = dec(report.commission)
    if amount is None:
        return None
    return BrokerCommission(
        exec_id=report.execId, commission=amount, currency=report.currency or "", realized_pnl=dec(report.realizedPNL)
    )


def preview(state: Any) -> OrderPreview:
    return OrderPreview(
        commission=dec(state.commission),
        min_commission=dec(state.minCommission),
        max_commission=dec(state.maxCommission),
        commission_currency=state.commissionCurrency or "",
        init_margin_change=dec(state.initMarginChange),
        maint_margin_change=dec(state.maintMarginChange),
        equity_with_loan_change=dec(state.equityWithLoanChange),
        init_margin_after=dec(state.initMarginAfter),
        maint_margin_after=dec(state.maintMarginAfter),
        equity_with_loan_after=dec(state.equityWithLoanAfter),
        warning=state.warningText or "",
    )
