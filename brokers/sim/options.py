"""Black-Scholes prices, greeks and implied volatility for the simulated option chains."""

from __future__ import annotations

import math
from dataclasses import dataclass

RATE = 0.04  # flat risk-free rate used for every option


def _cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _pdf(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


@dataclass(frozen=True)
class Greeks:
    price: float
    delta: float
    gamma: float
    vega: float  # per 1 vol point (0.01)
    theta: float  # per calendar day


def black_scholes(spot: float, strike: float, years: float, vol: float, right: str) -> Greeks:
    years = max(years, 1 / 365)
    vol = max(vol, 1e-4)
    sq = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + (RATE + vol * vol / 2) * years) / sq
    d2 = d1 - sq
    disc = math.exp(-RATE * years)
    if right == "C":
        price = spot * _cdf(d1) - strike * disc * _cdf(d2)
        delta = _cdf(d1)
        theta = -spot * _pdf(d1) * vol / (2 * math.sqrt(years)) - RATE * strike * disc * _cdf(d2)
    else:
        price = strike * disc * _cdf(-d2) - spot * _cdf(-d1)
        delta = _cdf(d1) - 1
        theta = -spot * _pdf(d1) * vol / (2 * math.sqrt(years)) + RATE * strike * disc * _cdf(-d2)
    gamma = _pdf(d1) / (spot * sq)
    vega = spot * _pdf(d1) * math.sqrt(years) / 100
    return Greeks(price, delta, gamma, vega, theta / 365)


def implied_vol(price: float, spot: float, strike: float, years: float, right: str) -> float | None:
    """The volatility that prices the option at ``price`` (bisection), or None if no volatility does."""
    lo, hi = 1e-4, 5.0
    if (
        not black_scholes(spot, strike, years, lo, right).price
        <= price
        <= black_scholes(spot, strike, years, hi, right).price
    ):
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        if black_scholes(spot, strike, years, mid, right).price < price:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
