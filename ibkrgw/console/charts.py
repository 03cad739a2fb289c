"""Data for the console's charts, as JSON the page's chart library draws (times in UTC epoch seconds).

- price: one-minute bars of a contract over the last two hours, the operator's fills marked on them;
- pnl: total and daily P&L over time (and net liquidation where recorded), from the account snapshots.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from audit.readable import UNREADABLE_ERRORS, readable
from brokers.adapter import ContractSpec
from ibkrgw.errors import GatewayError
from marketdata.models import AccountSnapshot
from marketdata.services import bars_get
from orders.selectors import fill_list

PRICE_BAR_SIZE = "1 min"
PRICE_DURATION = "7200 S"
EQUITY_POINTS = 2000  # newest snapshots drawn at most


def _num(value: Decimal | None) -> float | None:
    # The chart library draws floats; the numbers shown as text elsewhere stay Decimal.
    return None if value is None else float(value)


def price_chart(symbol: str) -> dict[str, Any]:
    try:
        contract, bars = bars_get(
            spec=ContractSpec(symbol=symbol.upper()),
            bar_size=PRICE_BAR_SIZE,
            duration=PRICE_DURATION,
            what_to_show="TRADES",
            use_rth=False,
        )
    except GatewayError as exc:
        return {"symbol": symbol.upper(), "error": exc.message, "bars": [], "markers": []}
    points = [
        {
            "time": int(bar.time.timestamp()),
            "open": _num(bar.open),
            "high": _num(bar.high),
            "low": _num(bar.low),
            "close": _num(bar.close),
        }
        for bar in bars
    ]
    times = [p["time"] for p in points]
    markers = []
    unreadable: list[str] = []
    if times:
        since = timezone.now() - timedelta(seconds=int(PRICE_DURATION.split()[0]))
        fills = readable(fill_list(symbol=contract.symbol, since=min(since, bars[0].time)), stop=500)
        unreadable = [f"{row} (not marked; run manage.py audit_verify)" for row in fills.named()]
        for fill in reversed(fills.rows):
            at = int(fill.executed_at.timestamp())
            # On the bar the fill happened in (the newest bar for a fill after it).
            bar_time = max((t for t in times if t <= at), default=times[0])
            bought = fill.side == "BOT"
            markers.append(
                {
                    "time": bar_time,
                    "position": "belowBar" if bought else "aboveBar",
                    "color": "#1b7f3b" if bought else "#b00020",
                    "shape": "arrowUp" if bought else "arrowDown",
                    "text": f"{'B' if bought else 'S'} {fill.quantity.normalize():f} @ {fill.price.normalize():f}",
                }
            )
    markers.sort(key=lambda m: m["time"])
    chart = {"symbol": contract.symbol, "con_id": contract.con_id, "bars": points, "markers": markers}
    return {**chart, "unreadable": unreadable} if unreadable else chart


def _snapshots(window: QuerySet[AccountSnapshot]) -> tuple[list[AccountSnapshot], list[str]]:
    """The snapshots of `window`, and a note for each one left out because a value of it cannot be read (written
    behind the application's back, e.g. a number no decimal column can hold): the chart goes on without it."""
    try:
        return list(window), []
    except UNREADABLE_ERRORS:
        pass
    rows: list[AccountSnapshot] = []
    left_out: list[str] = []
    for pk in window.values_list("pk", flat=True):
        try:
            rows.extend(AccountSnapshot.objects.filter(pk=pk))
        except UNREADABLE_ERRORS:
            left_out.append(f"Account snapshot {pk} cannot be read and is not drawn.")
    return rows, left_out


def equity_chart(account: str | None = None) -> dict[str, Any]:
    rows = AccountSnapshot.objects.order_by("-taken_at")
    if not account:
        account = rows.values_list("account", flat=True).first() or ""
    newest, left_out = _snapshots(rows.filter(account=account)[:EQUITY_POINTS])
    rows = list(reversed(newest))
    series: dict[str, list[dict[str, Any]]] = {
        "net_liquidation": [],
        "daily_pnl": [],
        "unrealized_pnl": [],
        "total_pnl": [],
    }
    last_time = None
    for row in rows:
        at = int(row.taken_at.timestamp())
        if at == last_time:
            continue  # the chart needs strictly increasing times
        last_time = at
        for name in ("net_liquidation", "daily_pnl", "unrealized_pnl"):
            value = getattr(row, name)
            if value is not None:
                series[name].append({"time": at, "value": float(value)})
        if row.unrealized_pnl is not None or row.realized_pnl is not None:
            total = (row.unrealized_pnl or 0) + (row.realized_pnl or 0)
            series["total_pnl"].append({"time": at, "value": float(total)})
    chart = {"account": account, "series": series}
    return {**chart, "unreadable": left_out} if left_out else chart
