"""Paper account: a single USD (BASE) cash ledger, positions, P&L and margin figures.

Non-USD instruments (e.g. SHOP on TSE in CAD, USD.JPY quoted in JPY) are converted
to USD at the simulated FX rate at fill time; the ledger itself stays single-currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .market import Instrument, Market

D0 = Decimal(0)
CENT = Decimal("0.01")
FIXED_FX = {"USD": Decimal(1), "CAD": Decimal("0.73")}

# Margin as a fraction of a position's market value, (initial, maintenance) per sec type and side:
# a simplified Reg-T style model (docs/simulator.md). Stocks: Reg T 50% initial, 25% long / 30% short
# maintenance; futures and FX: exchange-style fractions of notional; crypto and funds: paid in full.
MARGIN_RATES: dict[str, dict[str, tuple[Decimal, Decimal]]] = {
    "STK": {"long": (Decimal("0.50"), Decimal("0.25")), "short": (Decimal("0.50"), Decimal("0.30"))},
    "OPT": {"long": (Decimal("1.00"), Decimal("1.00")), "short": (Decimal("1.20"), Decimal("1.20"))},
    "FUT": {"long": (Decimal("0.06"), Decimal("0.05")), "short": (Decimal("0.06"), Decimal("0.05"))},
    "CASH": {"long": (Decimal("0.03"), Decimal("0.025")), "short": (Decimal("0.03"), Decimal("0.025"))},
    "BOND": {"long": (Decimal("0.10"), Decimal("0.10")), "short": (Decimal("0.10"), Decimal("0.10"))},
    "CRYPTO": {"long": (Decimal("1.00"), Decimal("1.00")), "short": (Decimal("1.00"), Decimal("1.00"))},
    "FUND": {"long": (Decimal("1.00"), Decimal("1.00")), "short": (Decimal("1.00"), Decimal("1.00"))},
}


@dataclass
class Position:
    inst: Instrument
    qty: Decimal = D0
    avg_price: Decimal = D0  # per unit of price, commission included (IB style)
    realized: Decimal = D0


def commission_for(inst: Instrument, qty: Decimal, price: Decimal, fx: Decimal) -> Decimal:
    """IBKR-Pro-like fixed schedule in USD."""
    qty = abs(qty)
    value = qty * price * inst.value_multiplier * fx
    if inst.sec_type == "STK":
        fee = max(Decimal("1.00"), qty * Decimal("0.005"))
        fee = min(fee, value * Decimal("0.01")) if value > 0 else fee
    elif inst.sec_type == "OPT":
        fee = max(Decimal("1.00"), qty * Decimal("0.65"))
    elif inst.sec_type == "FUT":
        fee = qty * Decimal("2.25")
    elif inst.sec_type == "CASH":
        fee = max(Decimal("2.00"), value * Decimal("0.00002"))
    elif inst.sec_type == "CRYPTO":
        fee = max(Decimal("1.75"), value * Decimal("0.0018"))
    else:  # BOND, FUND
        fee = max(Decimal("5.00"), value * Decimal("0.001"))
    return fee.quantize(CENT)


class Account:
    def __init__(self, code: str, market: Market, cash: Decimal = Decimal("1000000")) -> None:
        self.code = code
        self.market = market
        self.cash = cash
        self.start_cash = cash
        self.positions: dict[int, Position] = {}
        self.realized = D0
        self.commissions = D0

    # -- valuation helpers
    def fx(self, currency: str) -> Decimal:
        if currency in FIXED_FX:
            return FIXED_FX[currency]
        m = self.market
        pairs = {"EUR": 12087792, "GBP": 12087797}
        if currency in pairs:
            return m.quote(pairs[currency]).last
        if currency == "JPY":
            return Decimal(1) / m.quote(15016059).last
        return Decimal(1)

    def mark(self, inst: Instrument) -> Decimal:
        return self.market.quote(inst.con_id).last

    def market_value(self, p: Position) -> Decimal:
        return p.qty * self.mark(p.inst) * p.inst.value_multiplier * self.fx(p.inst.currency)

    def unrealized(self, p: Position) -> Decimal:
        cost = p.qty * p.avg_price * p.inst.value_multiplier * self.fx(p.inst.currency)
        return self.market_value(p) - cost

    # -- fills
    def apply_fill(self, inst: Instrument, side: str, qty: Decimal, price: Decimal, commission: Decimal) -> Decimal:
        """Book a fill; returns the realized P&L (after commission) of the closing part."""
        signed = qty if side == "BUY" else -qty
        fx = self.fx(inst.currency)
        self.cash -= signed * price * inst.value_multiplier * fx + commission
        self.commissions += commission
        p = self.positions.setdefault(inst.con_id, Position(inst))
        realized = D0
        # Like TWS, the average cost absorbs commission: buys cost more, short sales yield less.
        per_unit_fee = commission / qty / inst.value_multiplier / fx
        effective = price + per_unit_fee if signed > 0 else price - per_unit_fee
        if p.qty == 0 or (p.qty > 0) == (signed > 0):  # opening or adding
            new_qty = p.qty + signed
            cost = p.avg_price * abs(p.qty) + effective * qty
            p.avg_price = cost / abs(new_qty)
            p.qty = new_qty
        else:  # reducing, closing or flipping
            closing = min(abs(p.qty), qty)
            direction = 1 if p.qty > 0 else -1
            realized = (price - p.avg_price) * closing * direction * inst.value_multiplier * fx
            realized -= commission * closing / qty
            p.qty += signed
            if p.qty != 0 and (p.qty > 0) == (signed > 0):  # flipped: the rest opens fresh
                p.avg_price = effective
            elif p.qty == 0:
                p.avg_price = D0
        realized = realized.quantize(CENT)
        p.realized += realized
        self.realized += realized
        return realized

    # -- margin
    def position_margin(self, inst: Instrument, qty: Decimal, price: Decimal | None = None) -> tuple[Decimal, Decimal]:
        """(initial, maintenance) requirement of holding ``qty`` of ``inst`` (marked at ``price`` or the last)."""
        if qty == 0:
            return D0, D0
        mark = self.mark(inst) if price is None else price
        value = abs(qty) * mark * inst.value_multiplier * self.fx(inst.currency)
        rates = MARGIN_RATES.get(inst.sec_type, MARGIN_RATES["FUND"])["long" if qty > 0 else "short"]
        return value * rates[0], value * rates[1]

    def margin(self) -> tuple[Decimal, Decimal]:
        init = maint = D0
        for p in self.positions.values():
            i, m = self.position_margin(p.inst, p.qty)
            init, maint = init + i, maint + m
        return init, maint

    def margin_after(self, inst: Instrument, signed_qty: Decimal, price: Decimal, commission: Decimal) -> dict:
        """Figures before and after a trade of ``signed_qty`` at ``price`` (what-if and the pre-trade check)."""
        init, maint = self.margin()
        p = self.positions.get(inst.con_id)
        held = p.qty if p is not None else D0
        old_i, old_m = self.position_margin(inst, held)
        new_i, new_m = self.position_margin(inst, held + signed_qty, price)
        ewl = self.net_liquidation()
        return {
            "init_before": init,
            "maint_before": maint,
            "ewl_before": ewl,
            "init_after": init - old_i + new_i,
            "maint_after": maint - old_m + new_m,
            "ewl_after": ewl - commission,
        }

    def check_margin(self, inst: Instrument, signed_qty: Decimal, price: Decimal, commission: Decimal) -> str:
        """'' if the trade is covered, else IB's rejection text (error 201)."""
        f = self.margin_after(inst, signed_qty, price, commission)
        if f["init_after"] <= f["init_before"] or f["ewl_after"] >= f["init_after"]:
            return ""  # risk-reducing trades always pass, as at IB
        return (
            "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION "
            f"YOUR EQUITY WITH LOAN VALUE [{f['ewl_after'].quantize(CENT)} USD] MUST EXCEED THE INITIAL MARGIN "
            f"[{f['init_after'].quantize(CENT)} USD]"
        )

    # -- figures
    def gross_position_value(self) -> Decimal:
        return sum((abs(self.market_value(p)) for p in self.positions.values()), D0)

    def stock_market_value(self) -> Decimal:
        return sum((self.market_value(p) for p in self.positions.values() if p.inst.sec_type != "FUT"), D0)

    def unrealized_total(self) -> Decimal:
        return sum((self.unrealized(p) for p in self.positions.values()), D0)

    def net_liquidation(self) -> Decimal:
        # Futures are marked to market through unrealized P&L, everything else by value.
        futs = sum((self.unrealized(p) for p in self.positions.values() if p.inst.sec_type == "FUT"), D0)
        return self.cash + self.stock_market_value() + futs

    def values(self) -> list[tuple[str, Decimal | str, str]]:
        """(tag, value, currency) in the shape of TWS account updates."""
        q = lambda d: d.quantize(CENT)  # noqa: E731
        nlv = self.net_liquidation()
        gross = self.gross_position_value()
        init, maint = self.margin()
        avail = nlv - init
        rows: list[tuple[str, Decimal | str, str]] = [
            ("AccountCode", self.code, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("Currency", "USD", "USD"),
            ("Currency", "BASE", "BASE"),
            ("CashBalance", q(self.cash), "USD"),
            ("CashBalance", q(self.cash), "BASE"),
            ("TotalCashBalance", q(self.cash), "BASE"),
            ("TotalCashValue", q(self.cash), "USD"),
            ("NetLiquidation", q(nlv), "USD"),
            ("NetLiquidationByCurrency", q(nlv), "BASE"),
            ("EquityWithLoanValue", q(nlv), "USD"),
            ("GrossPositionValue", q(gross), "USD"),
            ("StockMarketValue", q(self.stock_market_value()), "BASE"),
            ("InitMarginReq", q(init), "USD"),
            ("MaintMarginReq", q(maint), "USD"),
            ("FullInitMarginReq", q(init), "USD"),
            ("FullMaintMarginReq", q(maint), "USD"),
            ("AvailableFunds", q(avail), "USD"),
            ("FullAvailableFunds", q(avail), "USD"),
            ("ExcessLiquidity", q(nlv - maint), "USD"),
            ("FullExcessLiquidity", q(nlv - maint), "USD"),
            # Reg T buying power: available funds at the 50% stock initial margin rate.
            ("BuyingPower", q(max(avail, D0) / MARGIN_RATES["STK"]["long"][0]), "USD"),
            ("Cushion", (((nlv - maint) / nlv) if nlv else D0).quantize(Decimal("0.0001")), ""),
            ("Leverage-S", ((gross / nlv) if nlv else D0).quantize(Decimal("0.01")), ""),
            # No settlement lag, no overnight margin change and no day boundary are modelled: cash is all
            # settled, the look-ahead figures are today's, the previous day's equity is the starting cash, and
            # the SMA is Reg T equity less the Reg T margin (the stock initial margin above).
            ("SettledCash", q(self.cash), "USD"),
            ("PreviousDayEquityWithLoanValue", q(self.start_cash), "USD"),
            ("RegTEquity", q(nlv), "USD"),
            ("RegTMargin", q(init), "USD"),
            ("SMA", q(max(nlv - init, D0)), "USD"),
            ("LookAheadInitMarginReq", q(init), "USD"),
            ("LookAheadMaintMarginReq", q(maint), "USD"),
            ("LookAheadAvailableFunds", q(avail), "USD"),
            ("LookAheadExcessLiquidity", q(nlv - maint), "USD"),
            ("LookAheadNextChange", "0", ""),
            ("HighestSeverity", "0", ""),
            ("UnrealizedPnL", q(self.unrealized_total()), "USD"),
            ("UnrealizedPnL", q(self.unrealized_total()), "BASE"),
            ("RealizedPnL", q(self.realized), "USD"),
            ("RealizedPnL", q(self.realized), "BASE"),
            ("AccruedCash", D0, "USD"),
            ("DayTradesRemaining", "-1", ""),
            *((f"DayTradesRemainingT+{day}", "-1", "") for day in range(1, 5)),
        ]
        return rows

    def summary(self, tags: set[str]) -> list[tuple[str, Decimal | str, str]]:
        """reqAccountSummary rows for the requested tags ($LEDGER adds per-currency ledger rows)."""
        by_tag: dict[str, tuple[Decimal | str, str]] = {}
        for tag, value, cur in self.values():
            if cur in ("USD", "") and tag not in by_tag:
                by_tag[tag] = (value, cur)
        by_tag["TotalCashValue"] = (by_tag["TotalCashValue"][0], "USD")
        by_tag["Leverage"] = by_tag.pop("Leverage-S")  # the summary names it without the segment suffix
        rows: list[tuple[str, Decimal | str, str]] = []
        for tag in sorted(t for t in tags if not t.startswith("$")):
            if tag in by_tag:
                rows.append((tag, *by_tag[tag]))
        if any(t.startswith("$LEDGER") for t in tags):
            q = lambda d: d.quantize(CENT)  # noqa: E731
            for cur in ("BASE", "USD"):
                rows += [
                    ("CashBalance", q(self.cash), cur),
                    ("NetLiquidationByCurrency", q(self.net_liquidation()), cur),
                    ("UnrealizedPnL", q(self.unrealized_total()), cur),
                    ("RealizedPnL", q(self.realized), cur),
                ]
        return rows

    def pnl(self) -> tuple[Decimal, Decimal, Decimal]:
        """(daily, unrealized, realized); a session is the gateway's lifetime."""
        u = self.unrealized_total().quantize(CENT)
        return u + self.realized, u, self.realized

    def pnl_single(self, con_id: int) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        p = self.positions.get(con_id)
        if p is None:
            return D0, D0, D0, D0, D0
        u = self.unrealized(p).quantize(CENT)
        return p.qty, u + p.realized, u, p.realized, self.market_value(p).quantize(CENT)
