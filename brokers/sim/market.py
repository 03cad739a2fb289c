"""Live quotes, read off each instrument's price path (path.py) at the current time.

Two gateways with the same seed show the same prices at the same moment, whoever subscribes to what.
``set_price`` moves a live price; the quote then follows the path's moves from that level. Options
are priced off their underlying on demand (Black-Scholes at the underlying's volatility).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from .options import Greeks, black_scholes
from .path import PricePath, session_minutes
from .protocol import ContractSpec
from .universe import Instrument, build_universe, matches, round_to_tick, stable_con_id

__all__ = ["Instrument", "Market", "Quote", "round_to_tick", "stable_con_id"]

D0 = Decimal(0)


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


# ---------------------------------------------------------------- market


@functools.lru_cache(maxsize=512)
def shared_path(seed: int, inst: Instrument) -> PricePath:
    """Paths are pure, so gateways in one process (tests start many) share them and their caches."""
    return PricePath(seed, inst)


class Market:
    """Quotes for every instrument; options are priced off their underlying on demand."""

    def __init__(self, seed: int, today: date | None = None) -> None:
        self.seed = seed
        self.today = today or datetime.now(UTC).date()
        self.instruments: dict[int, Instrument] = {i.con_id: i for i in build_universe(self.today)}
        self._rng: dict[int, random.Random] = {}
        self._quotes: dict[int, Quote] = {}
        self._paths: dict[int, PricePath] = {}
        self._adjust: dict[int, float] = {}  # set_price() moves the live price off the path by a factor
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
    def path(self, inst: Instrument) -> PricePath:
        path = self._paths.get(inst.con_id)
        if path is None:
            path = self._paths[inst.con_id] = shared_path(self.seed, inst)
        return path

    def _initial_quote(self, inst: Instrument) -> Quote:
        """Today's figures read off the path: last now, previous session close, session so far."""
        rng = self._rng[inst.con_id]
        now = datetime.now(UTC)
        path = self.path(inst)
        last = self._path_price(inst, now)
        day, minute, _ = path.local_day_minute(now)
        close = last
        for back in range(1, 10):
            prev = day - timedelta(days=back)
            regular = session_minutes(inst, prev)[0]
            if regular is not None:
                close = self._tick(inst, path.aggregate(prev, regular[0], regular[1]).close)
                break
        regular, extended = session_minutes(inst, day)
        opened = regular is not None and minute > regular[0]
        if opened:
            today = path.aggregate(day, regular[0], min(minute, regular[1]))
            open_, high, low = self._tick(inst, today.open), self._tick(inst, today.high), self._tick(inst, today.low)
        else:
            open_, high, low = close, max(close, last), min(close, last)
        # The day's volume so far, pre-market included.
        since = (extended or regular or (0, 0))[0]
        volume = Decimal(int(path.volume_until(now, since))) if minute > since else D0
        bid, ask = self._bid_ask(inst, last)
        return Quote(
            bid=bid,
            ask=ask,
            last=last,
            bid_size=self._size(inst, rng),
            ask_size=self._size(inst, rng),
            last_size=self._size(inst, rng),
            volume=volume,
            open=open_,
            high=max(high, last),
            low=min(low, last),
            close=close,
        )

    @staticmethod
    def _tick(inst: Instrument, price: float) -> Decimal:
        return max(inst.min_tick, round_to_tick(Decimal(str(round(price, 8))), inst.min_tick))

    def _path_price(self, inst: Instrument, now: datetime) -> Decimal:
        return self._tick(inst, self.path(inst).price(now) * self._adjust.get(inst.con_id, 1.0))

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

    def option_greeks(self, inst: Instrument, spot: Decimal | None = None, vol: float | None = None) -> Greeks:
        """Black-Scholes figures at the underlying's last price and volatility (or the ones given)."""
        under = self.instruments[inst.under_con_id]
        spot = self.quote(under.con_id).last if spot is None else spot
        vol = under.annual_vol if vol is None else vol
        return black_scholes(float(spot), float(inst.strike), self.option_years(inst), vol, inst.right)

    def option_years(self, inst: Instrument) -> float:
        ltd = inst.last_trade_date
        return max((date(int(ltd[:4]), int(ltd[4:6]), int(ltd[6:8])) - self.today).days, 1) / 365

    def _option_quote(self, inst: Instrument) -> Quote:
        under = self.quote(inst.under_con_id)
        g = self.option_greeks(inst, under.last)
        mid = max(Decimal("0.05"), round_to_tick(Decimal(str(round(g.price, 4))), inst.min_tick))
        bid, ask = max(Decimal("0.01"), mid - Decimal("0.02")), mid + Decimal("0.02")
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
        """Move every (non-derived) instrument to its path price now; returns the conIds that traded."""
        moved: set[int] = set()
        now = datetime.now(UTC)
        for con_id, q in self._quotes.items():
            inst = self.instruments[con_id]
            rng = self._rng[con_id]
            if rng.random() < 0.3:  # not every instrument trades every tick
                continue
            self._apply(inst, q, self._path_price(inst, now), self._size(inst, rng), now)
            q.bid_size, q.ask_size = self._size(inst, rng), self._size(inst, rng)
            moved.add(con_id)
        return moved

    def set_price(self, con_id: int, price: Decimal) -> None:
        inst = self.instruments[con_id]
        if inst.sec_type == "OPT":
            raise ValueError("option prices follow their underlying; set the underlying instead")
        q = self._quotes[con_id]
        now = datetime.now(UTC)
        price = round_to_tick(Decimal(price), inst.min_tick)
        # From here on the live price follows the path's moves from the level set.
        self._adjust[con_id] = float(price) / self.path(inst).price(now)
        self._apply(inst, q, price, Decimal(inst.lot), now)

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
