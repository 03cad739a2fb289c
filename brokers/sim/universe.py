"""The instrument universe: well-known listings plus futures and option chains derived from today.

Derived conIds come from a hash of a stable key, so they are identical across runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from .protocol import ContractSpec

D0 = Decimal(0)


def stable_con_id(key: str) -> int:
    """Derived conIds for instruments without a well-known one (stable across runs)."""
    digest = hashlib.sha256(key.encode()).digest()
    return 500_000_000 + int.from_bytes(digest[:4], "big") % 400_000_000


def round_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    return ((price / tick).to_integral_value(ROUND_HALF_UP) * tick).quantize(tick)


@dataclass(frozen=True)
class Instrument:
    con_id: int
    symbol: str
    sec_type: str
    exchange: str  # default exchange echoed when the request names none
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    min_tick: Decimal
    base_price: Decimal
    long_name: str
    valid_exchanges: tuple[str, ...]
    multiplier: str = ""  # as shown on the wire
    value_multiplier: Decimal = Decimal(1)  # cash value of one unit of price per unit of quantity
    last_trade_date: str = ""
    strike: Decimal = D0
    right: str = ""
    time_zone: str = "US/Eastern"
    hours: str = "stock"  # stock | future | fx | crypto | fund
    stock_type: str = ""
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    under_con_id: int = 0
    under_symbol: str = ""
    under_sec_type: str = ""
    sec_ids: tuple[tuple[str, str], ...] = ()
    spread_ticks: int = 1
    annual_vol: float = 0.25  # annualised volatility of the simulated price path
    lot: int = 100  # typical quote size unit
    # bond-only
    cusip: str = ""
    coupon: Decimal = D0
    maturity: str = ""
    issue_date: str = ""

    @property
    def has_quotes(self) -> bool:
        return self.sec_type not in ("IND",)

    @property
    def contract_month(self) -> str:
        return self.last_trade_date[:6]


# ---------------------------------------------------------------- universe


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    offset = (4 - first.weekday()) % 7
    return first + timedelta(days=offset + 14)


def _prev_weekday(d: date) -> date:
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


MONTH_CODES = "FGHJKMNQUVXZ"


# The listings, one row each. Annual volatility: typical realised figures (docs/simulator.md).
# (conId, symbol, primary exchange, currency, base price, name, stock type, industry, ISIN, volatility)
STOCKS = (
    (265598, "AAPL", "NASDAQ", "USD", "190.00", "APPLE INC", "COMMON", "Technology", "US0378331005", 0.25),
    (272093, "MSFT", "NASDAQ", "USD", "420.00", "MICROSOFT CORP", "COMMON", "Technology", "US5949181045", 0.22),
    (76792991, "TSLA", "NASDAQ", "USD", "250.00", "TESLA INC", "COMMON", "Consumer, Cyclical", "US88160R1014", 0.55),
    (4815747, "NVDA", "NASDAQ", "USD", "120.00", "NVIDIA CORP", "COMMON", "Technology", "US67066G1040", 0.45),
    (756733, "SPY", "ARCA", "USD", "520.00", "SPDR S&P 500 ETF TRUST", "ETF", "Funds", "US78462F1030", 0.15),
    (320227571, "QQQ", "NASDAQ", "USD", "440.00", "INVESCO QQQ TRUST SERIES 1", "ETF", "Funds", "US46090E1038", 0.20),
    # Ambiguous on purpose: listed in New York (USD) and Toronto (CAD).
    (195014116, "SHOP", "NYSE", "USD", "75.00", "SHOPIFY INC - CLASS A", "COMMON", "Technology", "CA82509L1076", 0.50),
    (195014132, "SHOP", "TSE", "CAD", "102.00", "SHOPIFY INC - CLASS A", "COMMON", "Technology", "CA82509L1076", 0.50),
)
# (conId, base currency, quote currency, price, tick, volatility)
FX_PAIRS = (
    (12087792, "EUR", "USD", "1.08500", "0.00005", 0.07),
    (12087797, "GBP", "USD", "1.27000", "0.00005", 0.08),
    (15016059, "USD", "JPY", "150.000", "0.005", 0.09),
)
# (symbol, exchange, name, price of the front month, tick, multiplier, expiries listed, cycle, volatility)
FUTURES = (
    ("ES", "CME", "E-mini S&P 500", "5210.00", "0.25", "50", 4, "quarterly", 0.15),
    ("NQ", "CME", "E-mini NASDAQ 100", "18250.00", "0.25", "20", 4, "quarterly", 0.20),
    ("CL", "NYMEX", "Light Sweet Crude Oil", "78.00", "0.01", "1000", 6, "monthly", 0.35),
)
OPTION_UNDERLYINGS = ("AAPL", "SPY")


def _stock(row: tuple) -> Instrument:
    con_id, symbol, primary, currency, price, name, stock_type, industry, isin, vol = row
    return Instrument(
        con_id=con_id,
        symbol=symbol,
        sec_type="STK",
        exchange="SMART",
        primary_exchange=primary,
        currency=currency,
        local_symbol=symbol,
        trading_class=symbol,
        min_tick=Decimal("0.01"),
        base_price=Decimal(price),
        long_name=name,
        valid_exchanges=("SMART", primary, "ARCA", "BATS", "IEX") if currency == "USD" else ("SMART", primary),
        stock_type=stock_type,
        industry=industry,
        category=industry,
        subcategory=industry,
        sec_ids=(("ISIN", isin),),
        time_zone="America/Toronto" if currency == "CAD" else "US/Eastern",
        annual_vol=vol,
    )


def build_universe(today: date) -> list[Instrument]:
    u = [_stock(row) for row in STOCKS] + [
        Instrument(
            con_id=416904,
            symbol="SPX",
            sec_type="IND",
            exchange="CBOE",
            primary_exchange="",
            currency="USD",
            local_symbol="SPX",
            trading_class="SPX",
            min_tick=Decimal("0.01"),
            base_price=Decimal("5200.00"),
            long_name="S&P 500 Stock Index",
            valid_exchanges=("CBOE",),
            annual_vol=0.15,
            industry="Indices",
            category="Broad Range Equity Index",
        ),
        Instrument(
            con_id=416843,
            symbol="NDX",
            sec_type="IND",
            exchange="NASDAQ",
            primary_exchange="",
            currency="USD",
            local_symbol="NDX",
            trading_class="NDX",
            min_tick=Decimal("0.01"),
            base_price=Decimal("18200.00"),
            long_name="NASDAQ 100 Stock Index",
            valid_exchanges=("NASDAQ",),
            annual_vol=0.20,
            industry="Indices",
            category="Broad Range Equity Index",
        ),
        Instrument(
            con_id=479624278,
            symbol="BTC",
            sec_type="CRYPTO",
            exchange="PAXOS",
            primary_exchange="",
            currency="USD",
            local_symbol="BTC.USD",
            trading_class="BTC",
            min_tick=Decimal("0.25"),
            base_price=Decimal("65000.00"),
            long_name="Bitcoin",
            valid_exchanges=("PAXOS",),
            annual_vol=0.60,
            hours="crypto",
            time_zone="UTC",
            spread_ticks=20,
            lot=1,
        ),
        Instrument(
            con_id=stable_con_id("BOND:91282CLW9"),
            symbol="US-T",
            sec_type="BOND",
            exchange="SMART",
            primary_exchange="",
            currency="USD",
            local_symbol="91282CLW9",
            trading_class="GOVT",
            min_tick=Decimal("0.001"),
            base_price=Decimal("98.500"),
            long_name="United States Treasury Note/Bond",
            valid_exchanges=("SMART", "BONDDESK"),
            annual_vol=0.06,
            value_multiplier=Decimal(10),
            spread_ticks=30,
            lot=10,
            cusip="91282CLW9",
            coupon=Decimal("4.25"),
            maturity="20341115",
            issue_date="20241115",
            sec_ids=(("CUSIP", "91282CLW9"),),
        ),
        Instrument(
            con_id=stable_con_id("FUND:VFIAX"),
            symbol="VFIAX",
            sec_type="FUND",
            exchange="FUNDSERV",
            primary_exchange="FUNDSERV",
            currency="USD",
            local_symbol="VFIAX",
            trading_class="VFIAX",
            min_tick=Decimal("0.01"),
            base_price=Decimal("480.00"),
            long_name="VANGUARD 500 INDEX FUND ADMIRAL",
            valid_exchanges=("FUNDSERV",),
            annual_vol=0.15,
            hours="fund",
            lot=1,
            sec_ids=(("ISIN", "US9229087104"),),
        ),
    ]
    for con_id, base, quote, price, tick, vol in FX_PAIRS:
        pair = f"{base}.{quote}"
        u.append(
            Instrument(
                con_id=con_id,
                symbol=base,
                sec_type="CASH",
                exchange="IDEALPRO",
                primary_exchange="",
                currency=quote,
                local_symbol=pair,
                trading_class=pair,
                min_tick=Decimal(tick),
                base_price=Decimal(price),
                long_name="European Monetary Union Euro" if base == "EUR" else pair,
                valid_exchanges=("IDEALPRO",),
                hours="fx",
                time_zone="US/Eastern",
                spread_ticks=2,
                lot=1_000_000,
                annual_vol=vol,
            )
        )
    u += _futures(today)
    for sym in OPTION_UNDERLYINGS:
        under = next(i for i in u if i.symbol == sym)
        u += _options(under, today)
    return u


def _futures(today: date) -> list[Instrument]:
    out: list[Instrument] = []
    for symbol, exch, name, price, tick, mult, count, cycle, vol in FUTURES:
        expiries: list[date] = []
        y, m = today.year, today.month
        while len(expiries) < count:
            if cycle == "quarterly" and m % 3 == 0:
                ltd = _third_friday(y, m)
                month = (y, m)
            elif cycle == "monthly":
                # CL: trading stops a few days before the 25th of the prior month.
                py, pm = (y, m - 1) if m > 1 else (y - 1, 12)
                ltd = _prev_weekday(date(py, pm, 20))
                month = (y, m)
            else:
                ltd = None
            if ltd is not None and ltd > today:
                expiries.append(ltd)
                month_code = MONTH_CODES[month[1] - 1]
                cm = f"{month[0]}{month[1]:02d}"
                out.append(
                    Instrument(
                        con_id=stable_con_id(f"FUT:{symbol}:{cm}"),
                        symbol=symbol,
                        sec_type="FUT",
                        exchange=exch,
                        primary_exchange="",
                        currency="USD",
                        local_symbol=f"{symbol}{month_code}{month[0] % 10}",
                        trading_class=symbol,
                        min_tick=Decimal(tick),
                        base_price=Decimal(price) + Decimal(len(expiries) - 1) * Decimal(tick) * 8,
                        long_name=name,
                        valid_exchanges=(exch, "QBALGO"),
                        multiplier=mult,
                        value_multiplier=Decimal(mult),
                        last_trade_date=ltd.strftime("%Y%m%d"),
                        hours="future",
                        under_con_id=0,
                        under_symbol=symbol,
                        under_sec_type="IND",
                        lot=1,
                        annual_vol=vol,
                        industry="",
                        category="",
                    )
                )
            m += 1
            if m > 12:
                y, m = y + 1, 1
    return out


def _options(under: Instrument, today: date) -> list[Instrument]:
    """Weekly Friday expiries, 11 strikes around the underlying's starting price."""
    out: list[Instrument] = []
    step = Decimal(5)
    atm = (under.base_price / step).to_integral_value(ROUND_HALF_UP) * step
    strikes = [atm + step * k for k in range(-5, 6)]
    friday = today + timedelta(days=(4 - today.weekday()) % 7 or 7)
    expiries = [friday + timedelta(weeks=w) for w in range(4)]
    for exp in expiries:
        for strike in strikes:
            for right in ("C", "P"):
                ymd = exp.strftime("%Y%m%d")
                occ = f"{under.symbol:<6}{exp.strftime('%y%m%d')}{right}{int(strike * 1000):08d}"
                out.append(
                    Instrument(
                        con_id=stable_con_id(f"OPT:{under.symbol}:{ymd}:{strike}:{right}"),
                        symbol=under.symbol,
                        sec_type="OPT",
                        exchange="SMART",
                        primary_exchange="",
                        currency="USD",
                        local_symbol=occ,
                        trading_class=under.symbol,
                        min_tick=Decimal("0.01"),
                        base_price=D0,
                        long_name=under.long_name,
                        valid_exchanges=("SMART", "CBOE", "AMEX", "ISE", "PHLX"),
                        multiplier="100",
                        value_multiplier=Decimal(100),
                        last_trade_date=ymd,
                        strike=strike,
                        right=right,
                        under_con_id=under.con_id,
                        under_symbol=under.symbol,
                        under_sec_type="STK",
                        spread_ticks=4,
                        lot=10,
                    )
                )
    return out


RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


def matches(inst: Instrument, spec: ContractSpec) -> bool:
    """TWS-style lookup: blank fields in the request are wildcards."""
    if spec.con_id:
        return inst.con_id == spec.con_id
    if spec.sec_id:
        if not any(v.upper() == spec.sec_id.upper() for _, v in inst.sec_ids):
            return False
    elif not spec.symbol and not spec.local_symbol:
        return False
    sec_type = spec.sec_type.upper()
    if sec_type == "CONTFUT":
        sec_type = "FUT"
    checks = (
        (spec.symbol, inst.symbol),
        (sec_type, inst.sec_type),
        (spec.currency, inst.currency),
        (spec.local_symbol, inst.local_symbol),
        (spec.trading_class, inst.trading_class),
        (spec.multiplier, inst.multiplier),
    )
    for want, have in checks:
        if want and want.upper() != have.upper() and not (want == spec.symbol and want.upper() == inst.cusip):
            return False
    if spec.exchange and spec.exchange.upper() not in inst.valid_exchanges:
        return False
    if spec.primary_exchange and spec.primary_exchange.upper() not in (inst.primary_exchange, inst.exchange):
        return False
    if spec.last_trade_date:
        want = spec.last_trade_date.replace("-", "")[:8]
        if not (inst.last_trade_date.startswith(want) or inst.contract_month == want):
            return False
    if spec.strike is not None and inst.strike != spec.strike:
        return False
    if spec.right and RIGHTS.get(spec.right.upper()) != inst.right:
        return False
    return True
