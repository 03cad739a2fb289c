"""Instrument universe, deterministic random-walk quotes and historical bars.

Everything is derived from the seed and the instrument's conId, so two gateways
with the same seed walk the same price paths regardless of who subscribes to what.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

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


@dataclass
class Quote:
    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last_size: Decimal
    volume: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal  # previous session close
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Decimal]:
        return {
            k: getattr(self, k)
            for k in (
                "bid",
                "ask",
                "last",
                "bid_size",
                "ask_size",
                "last_size",
                "volume",
                "open",
                "high",
                "low",
                "close",
            )
        }


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


def _stock(
    con_id: int,
    symbol: str,
    primary: str,
    price: str,
    name: str,
    *,
    currency: str = "USD",
    stock_type: str = "COMMON",
    industry: str = "Technology",
    isin: str = "",
    tz: str = "US/Eastern",
) -> Instrument:
    return Instrument(
        con_id=con_id,
        symbol=symbol,
        sec_type="STK",
        exchange="SMART",
        primary_exchange=primary,
        currency=currency,
        local_symbol=symbol,
        trading_class=symbol if primary != "TSE" else symbol,
        min_tick=Decimal("0.01"),
        base_price=Decimal(price),
        long_name=name,
        valid_exchanges=("SMART", primary, "ARCA", "BATS", "IEX") if currency == "USD" else ("SMART", primary),
        stock_type=stock_type,
        industry=industry,
        category=industry,
        subcategory=industry,
        sec_ids=(("ISIN", isin),) if isin else (),
        time_zone=tz,
    )


def build_universe(today: date) -> list[Instrument]:
    u: list[Instrument] = [
        _stock(265598, "AAPL", "NASDAQ", "190.00", "APPLE INC", isin="US0378331005"),
        _stock(272093, "MSFT", "NASDAQ", "420.00", "MICROSOFT CORP", isin="US5949181045"),
        _stock(76792991, "TSLA", "NASDAQ", "250.00", "TESLA INC", industry="Consumer, Cyclical", isin="US88160R1014"),
        _stock(4815747, "NVDA", "NASDAQ", "120.00", "NVIDIA CORP", isin="US67066G1040"),
        _stock(
            756733,
            "SPY",
            "ARCA",
            "520.00",
            "SPDR S&P 500 ETF TRUST",
            stock_type="ETF",
            industry="Funds",
            isin="US78462F1030",
        ),
        _stock(
            320227571,
            "QQQ",
            "NASDAQ",
            "440.00",
            "INVESCO QQQ TRUST SERIES 1",
            stock_type="ETF",
            industry="Funds",
            isin="US46090E1038",
        ),
        # Ambiguous on purpose: listed in New York (USD) and Toronto (CAD).
        _stock(195014116, "SHOP", "NYSE", "75.00", "SHOPIFY INC - CLASS A", isin="CA82509L1076"),
        _stock(
            195014132,
            "SHOP",
            "TSE",
            "102.00",
            "SHOPIFY INC - CLASS A",
            currency="CAD",
            isin="CA82509L1076",
            tz="America/Toronto",
        ),
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
            hours="fund",
            lot=1,
            sec_ids=(("ISIN", "US9229087104"),),
        ),
    ]
    for con_id, base, quote, price, tick in (
        (12087792, "EUR", "USD", "1.08500", "0.00005"),
        (12087797, "GBP", "USD", "1.27000", "0.00005"),
        (15016059, "USD", "JPY", "150.000", "0.005"),
    ):
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
            )
        )
    u += _futures(today)
    for sym in ("AAPL", "SPY"):
        under = next(i for i in u if i.symbol == sym)
        u += _options(under, today)
    return u


def _futures(today: date) -> list[Instrument]:
    out: list[Instrument] = []
    specs = (
        ("ES", "CME", "E-mini S&P 500", "5210.00", "0.25", "50", 4, "quarterly"),
        ("NQ", "CME", "E-mini NASDAQ 100", "18250.00", "0.25", "20", 4, "quarterly"),
        ("CL", "NYMEX", "Light Sweet Crude Oil", "78.00", "0.01", "1000", 6, "monthly"),
    )
    for symbol, exch, name, price, tick, mult, count, cycle in specs:
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


# ---------------------------------------------------------------- market


class Market:
    """Quotes for every instrument; options are priced off their underlying on demand."""

    def __init__(self, seed: int, today: date | None = None) -> None:
        self.seed = seed
        self.today = today or datetime.now(UTC).date()
        self.instruments: dict[int, Instrument] = {i.con_id: i for i in build_universe(self.today)}
        self._rng: dict[int, random.Random] = {}
        self._quotes: dict[int, Quote] = {}
        for inst in self.instruments.values():
            if inst.sec_type != "OPT":
                self._rng[inst.con_id] = random.Random(f"{seed}:{inst.con_id}")  # noqa: S311 - seeded simulation, not crypto
                self._quotes[inst.con_id] = self._initial_quote(inst)

    # -- lookup
    def get(self, con_id: int) -> Instrument | None:
        return self.instruments.get(con_id)

    def lookup(self, key: int | str) -> Instrument:
        """By conId or by symbol (first/primary listing); for the public test API."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            inst = self.instruments.get(int(key))
        else:
            inst = next(
                (
                    i
                    for i in self.instruments.values()
                    if key.upper() in (i.symbol, i.local_symbol)
                    and i.sec_type not in ("OPT", "FUT")
                    and i.currency in ("USD", "JPY")
                ),
                None,
            )
            if inst is None:  # futures: front month
                futs = sorted(
                    (i for i in self.instruments.values() if i.symbol == key.upper() and i.sec_type == "FUT"),
                    key=lambda i: i.last_trade_date,
                )
                inst = futs[0] if futs else None
        if inst is None:
            raise KeyError(key)
        return inst

    def find(self, spec: ContractSpec) -> list[Instrument]:
        found = [i for i in self.instruments.values() if matches(i, spec)]
        found.sort(key=lambda i: (i.sec_type, i.symbol, i.last_trade_date, i.strike, i.right, i.con_id))
        if spec.sec_type.upper() == "CONTFUT" and found:
            found = [replace(found[0], sec_type="CONTFUT")]
        return found

    def option_chains(self, under_con_id: int) -> list[tuple[str, str, str, list[str], list[Decimal]]]:
        opts = [i for i in self.instruments.values() if i.sec_type == "OPT" and i.under_con_id == under_con_id]
        if not opts:
            return []
        exps = sorted({o.last_trade_date for o in opts})
        strikes = sorted({o.strike for o in opts})
        return [(ex, opts[0].trading_class, "100", exps, strikes) for ex in opts[0].valid_exchanges]

    # -- quotes
    def _initial_quote(self, inst: Instrument) -> Quote:
        rng = self._rng[inst.con_id]
        last = round_to_tick(inst.base_price, inst.min_tick)
        bid, ask = self._bid_ask(inst, last)
        close = round_to_tick(last * Decimal(1 + rng.uniform(-0.01, 0.01)), inst.min_tick)
        return Quote(
            bid=bid,
            ask=ask,
            last=last,
            bid_size=self._size(inst, rng),
            ask_size=self._size(inst, rng),
            last_size=self._size(inst, rng),
            volume=Decimal(rng.randint(1000, 5000) * inst.lot),
            open=close,
            high=max(last, close),
            low=min(last, close),
            close=close,
        )

    @staticmethod
    def _bid_ask(inst: Instrument, last: Decimal) -> tuple[Decimal, Decimal]:
        half_down = inst.spread_ticks // 2
        bid = last - inst.min_tick * half_down
        return bid, bid + inst.min_tick * inst.spread_ticks

    @staticmethod
    def _size(inst: Instrument, rng: random.Random) -> Decimal:
        return Decimal(rng.randint(1, 30) * max(1, inst.lot // 10 if inst.lot >= 100 else 1))

    def quote(self, con_id: int) -> Quote:
        inst = self.instruments[con_id]
        if inst.sec_type == "OPT":
            return self._option_quote(inst)
        return self._quotes[con_id]

    def _option_quote(self, inst: Instrument) -> Quote:
        under = self.quote(inst.under_con_id)
        spot = under.last
        exp = datetime.strptime(inst.last_trade_date, "%Y%m%d").replace(tzinfo=UTC).date()
        t = max((exp - self.today).days, 1) / 365
        sigma_move = float(spot) * 0.25 * math.sqrt(t)
        moneyness = float(spot - inst.strike) if inst.right == "C" else float(inst.strike - spot)
        intrinsic = max(moneyness, 0.0)
        time_value = 0.4 * sigma_move * math.exp(-((moneyness / sigma_move) ** 2) / 2)
        mid = max(Decimal("0.05"), round_to_tick(Decimal(intrinsic + time_value), inst.min_tick))
        bid, ask = mid - Decimal("0.02"), mid + Decimal("0.02")
        return Quote(
            bid=bid,
            ask=ask,
            last=mid,
            bid_size=Decimal(10),
            ask_size=Decimal(12),
            last_size=Decimal(1),
            volume=Decimal(250),
            open=mid,
            high=mid,
            low=mid,
            close=mid,
            updated=under.updated,
        )

    def step(self) -> set[int]:
        """One random-walk step for every (non-derived) instrument; returns the conIds that moved."""
        moved: set[int] = set()
        now = datetime.now(UTC)
        for con_id, q in self._quotes.items():
            inst = self.instruments[con_id]
            rng = self._rng[con_id]
            if rng.random() < 0.3:  # not every instrument trades every tick
                continue
            sigma_ticks = max(1.0, float(q.last) * 0.0002 / float(inst.min_tick))
            delta = round(rng.gauss(0, sigma_ticks))
            last = max(inst.min_tick, q.last + inst.min_tick * delta)
            self._apply(inst, q, last, self._size(inst, rng), now)
            q.bid_size, q.ask_size = self._size(inst, rng), self._size(inst, rng)
            moved.add(con_id)
        return moved

    def set_price(self, con_id: int, price: Decimal) -> None:
        inst = self.instruments[con_id]
        if inst.sec_type == "OPT":
            raise ValueError("option prices follow their underlying; set the underlying instead")
        q = self._quotes[con_id]
        self._apply(inst, q, round_to_tick(Decimal(price), inst.min_tick), Decimal(inst.lot), datetime.now(UTC))

    def _apply(self, inst: Instrument, q: Quote, last: Decimal, size: Decimal, now: datetime) -> None:
        q.last = last
        q.bid, q.ask = self._bid_ask(inst, last)
        q.last_size = size
        q.volume += size
        q.high, q.low = max(q.high, last), min(q.low, last)
        q.updated = now

    def close_session(self) -> None:
        """Simulated close: the current last becomes the official close."""
        for q in self._quotes.values():
            q.close = q.last


# ---------------------------------------------------------------- historical bars

BAR_SIZES: dict[str, int] = {
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": 86400,
    "1 week": 7 * 86400,
    "1 month": 30 * 86400,
}
DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 31 * 86400, "Y": 366 * 86400}
MAX_BARS = 20_000


@dataclass
class Bar:
    start: datetime  # UTC, or midnight of the session date for daily+ bars
    daily: bool
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    wap: Decimal
    count: int


def parse_duration(text: str) -> int:
    num, _, unit = text.strip().partition(" ")
    if unit.upper() not in DURATION_UNITS:
        raise ValueError(f"bad duration {text!r}")
    return int(num) * DURATION_UNITS[unit.upper()]


def parse_end(text: str) -> datetime:
    """'' -> now; 'YYYYMMDD HH:MM:SS[ TZ]' or 'YYYYMMDD-HH:MM:SS' (UTC)."""
    text = text.strip()
    if not text:
        return datetime.now(UTC)
    if "-" in text and " " not in text:
        return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    parts = text.split()
    tz = ZoneInfo(parts[2]) if len(parts) > 2 else UTC
    return datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S").replace(tzinfo=tz).astimezone(UTC)


def in_session(inst: Instrument, local: datetime, rth: bool) -> bool:
    wd, minutes = local.weekday(), local.hour * 60 + local.minute
    if inst.hours == "crypto":
        return True
    if inst.hours == "fx":
        return wd < 5 or (wd == 6 and minutes >= 17 * 60 + 15)
    if inst.hours == "future":
        if rth:
            return wd < 5 and 9 * 60 + 30 <= minutes < 16 * 60
        return (wd < 4 or (wd == 4 and minutes < 17 * 60) or (wd == 6 and minutes >= 18 * 60)) and not (
            17 * 60 <= minutes < 18 * 60
        )
    if wd >= 5:
        return False
    if rth or inst.hours == "fund":
        return 9 * 60 + 30 <= minutes < 16 * 60
    return 4 * 60 <= minutes < 20 * 60


def make_bars(
    market: Market, inst: Instrument, end: datetime, duration_s: int, bar_s: int, rth: bool, what: str
) -> list[Bar]:
    """Bars ending at ``end``; the newest bar closes at the current last price.

    Prices are walked backwards from the current quote with per-bar seeded noise, so
    a given (seed, instrument, bar size, bar time) always produces the same move.
    """
    tz = ZoneInfo(inst.time_zone)
    daily = bar_s >= 86400
    starts: list[datetime] = []
    if daily:
        day = end.astimezone(tz).date()
        first = (end - timedelta(seconds=duration_s)).astimezone(tz).date()
        while day > first or not starts:
            if inst.hours == "crypto" or day.weekday() < 5:
                if bar_s == 7 * 86400:
                    key = day - timedelta(days=day.weekday())
                elif bar_s >= 30 * 86400:
                    key = day.replace(day=1)
                else:
                    key = day
                start = datetime(key.year, key.month, key.day, tzinfo=tz)
                if not starts or starts[-1] != start:
                    starts.append(start)
            day -= timedelta(days=1)
            if len(starts) > MAX_BARS or (end.date() - day).days > 40 * 366:
                break
    else:
        # Outside trading hours, anchor on the end of the last session (IB returns the
        # latest available data rather than nothing), so results don't depend on the weekday.
        block = int(end.timestamp()) // 900 * 900
        for _ in range(8 * 96):
            if in_session(inst, datetime.fromtimestamp(block, UTC).astimezone(tz), rth):
                break
            block -= 900
        end_ts = min(int(end.timestamp()), block + 900)
        t = (end_ts - 1) // bar_s * bar_s if end_ts % bar_s == 0 else end_ts // bar_s * bar_s
        lo = end_ts - duration_s
        while t >= lo:
            start = datetime.fromtimestamp(t, UTC)
            if in_session(inst, start.astimezone(tz), rth):
                starts.append(start)
                if len(starts) > MAX_BARS:
                    break
            t -= bar_s
    if len(starts) > MAX_BARS:
        raise OverflowError("too many bars")
    quote = market.quote(inst.con_id)
    tick = inst.min_tick
    close = quote.last
    vol_scale = max(1.0, math.sqrt(bar_s / 60))
    bars: list[Bar] = []
    for start in starts:  # newest first
        rng = random.Random(f"{market.seed}:{inst.con_id}:{bar_s}:{int(start.timestamp())}")  # noqa: S311
        sigma = max(1.0, float(close) * 0.0006 * vol_scale / float(tick))
        open_ = max(tick, close - tick * round(rng.gauss(0, sigma)))
        high = max(open_, close) + tick * rng.randint(0, max(1, int(sigma / 2)))
        low = max(tick, min(open_, close) - tick * rng.randint(0, max(1, int(sigma / 2))))
        wap = round_to_tick((high + low + close) / 3, tick)
        count = rng.randint(10, 500)
        volume = Decimal(count * max(1, inst.lot // 10)) if what in ("TRADES", "ADJUSTED_LAST") else Decimal(-1)
        bars.append(Bar(start, daily, open_, high, low, close, volume, wap, count if volume >= 0 else -1))
        close = open_
    bars.reverse()
    return bars


def format_bar_time(bar_start: datetime, daily: bool, format_date: int, tz_name: str) -> str:
    if daily:
        return bar_start.strftime("%Y%m%d")
    if format_date == 2:
        return str(int(bar_start.timestamp()))
    local = bar_start.astimezone(ZoneInfo(tz_name))
    return f"{local.strftime('%Y%m%d %H:%M:%S')} {tz_name}"


def trading_hours(inst: Instrument, today: date, rth: bool) -> str:
    """A week of sessions in TWS's 'YYYYMMDD:HHMM-YYYYMMDD:HHMM;…' format."""
    out = []
    for n in range(7):
        d = today + timedelta(days=n)
        ds = d.strftime("%Y%m%d")
        if inst.hours == "crypto":
            out.append(f"{ds}:0000-{ds}:2359")
        elif d.weekday() >= 5:
            out.append(f"{ds}:CLOSED")
        elif rth or inst.hours == "fund":
            out.append(f"{ds}:0930-{ds}:1600")
        elif inst.hours in ("future", "fx"):
            prev = (d - timedelta(days=1)).strftime("%Y%m%d")
            out.append(f"{prev}:1800-{ds}:1700")
        else:
            out.append(f"{ds}:0400-{ds}:2000")
    return ";".join(out)
