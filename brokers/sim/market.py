"""Live quotes: a deterministic random walk per instrument, seeded by (seed, conId).

Two gateways with the same seed walk the same price paths regardless of who subscribes to what.
Options are priced off their underlying on demand.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal

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
