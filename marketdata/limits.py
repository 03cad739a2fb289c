"""IB's historical-data limits, checked before a request goes to the broker.

IB documents the longest duration each bar size may cover (the "step sizes" of its historical-data
limitations: 1-second bars up to 1800 S, 1-minute bars up to 1 D, 30-minute bars up to 1 M...) and
rejects a longer request with error 162 after a round trip. We answer at once, with the limit.
"""

from __future__ import annotations

from ibkrgw.errors import ErrorCode, GatewayError

# Seconds per duration unit, counted as IB does for these limits (a month as 31 days, a year as 366).
DURATION_SECONDS = {"S": 1, "D": 86_400, "W": 7 * 86_400, "M": 31 * 86_400, "Y": 366 * 86_400}

# Bar size -> the longest duration one request may cover; bar sizes of a day or more have no limit.
MAX_DURATION: dict[str, str] = {
    "1 secs": "1800 S",
    "5 secs": "3600 S",
    "10 secs": "14400 S",
    "15 secs": "14400 S",
    "30 secs": "28800 S",
    "1 min": "1 D",
    "2 mins": "2 D",
    "3 mins": "1 W",
    "5 mins": "1 W",
    "10 mins": "1 W",
    "15 mins": "1 W",
    "20 mins": "1 W",
    "30 mins": "1 M",
    "1 hour": "1 M",
    "2 hours": "1 M",
    "3 hours": "1 M",
    "4 hours": "1 M",
    "8 hours": "1 M",
}


def duration_seconds(duration: str) -> int:
    count, _, unit = duration.partition(" ")
    return int(count) * DURATION_SECONDS[unit]


def check_historical_request(*, bar_size: str, duration: str) -> None:
    """Raise `historical_limit` (400) when IB would refuse this bar size over this duration, `invalid_request`
    for a duration of nothing."""
    if duration_seconds(duration) <= 0:  # bad input, not one of IB's limits: there is no max_duration to give
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "The duration must be at least 1.",
            details={"fields": ["duration"], "duration": duration},
        )
    limit = MAX_DURATION.get(bar_size)
    if limit is not None and duration_seconds(duration) > duration_seconds(limit):
        raise GatewayError(
            ErrorCode.HISTORICAL_LIMIT,
            f"IB serves {bar_size} bars over at most {limit} per request; use a shorter duration or a larger bar size.",
            details={"bar_size": bar_size, "duration": duration, "max_duration": limit},
        )
