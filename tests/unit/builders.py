"""Plain-data builders for the fast tests: order requests, contracts, quotes, previews."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from brokers.adapter import ContractInfo, OrderPreview, Quote
from orders.types import OrderRequest

# A fixed instant: freshness and approval windows are checked against a frozen clock, never a real one.
NOW = datetime(2026, 3, 2, 15, 0, 0, tzinfo=UTC)


def order(**fields) -> OrderRequest:
    values = {"symbol": "AAPL", "action": "BUY", "quantity": Decimal("10"), "order_type": "MKT", "tif": "DAY"}
    values.update(fields)
    return OrderRequest(**values)


def contract(**fields) -> ContractInfo:
    values = {"con_id": 265598, "symbol": "AAPL", "sec_type": "STK", "exchange": "SMART", "currency": "USD"}
    values.update(fields)
    return ContractInfo(**values)


def quote(*, last="100", bid=None, ask=None, close=None, time=NOW, received_at=None) -> Quote:
    def dec(value):
        return None if value is None else Decimal(value)

    return Quote(
        con_id=265598,
        symbol="AAPL",
        bid=dec(bid),
        ask=dec(ask),
        last=dec(last),
        bid_size=None,
        ask_size=None,
        last_size=None,
        volume=None,
        close=dec(close),
        high=None,
        low=None,
        time=time,
        market_data_type=1,
        received_at=received_at,
    )


def preview(*, init_margin_after=None, equity_with_loan_after=None) -> OrderPreview:
    return OrderPreview(
        commission=Decimal("1"),
        min_commission=None,
        max_commission=None,
        commission_currency="USD",
        init_margin_change=None,
        maint_margin_change=None,
        equity_with_loan_change=None,
        init_margin_after=init_margin_after,
        maint_margin_after=None,
        equity_with_loan_after=equity_with_loan_after,
    )
