"""How fast hostile requests are refused, through daphne on the simulated gateway.

    .venv/bin/python bench/bench_hostile.py [--n 50]

Prints p50/p99 of: bars over IB's duration limit (refused without the broker) next to bars that are
served, a quote with NUL bytes in its path, a 100,000-deep JSON order, and a 10 MB order body (413),
with the refusal/served ratio for bars.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import stack, summary  # noqa: E402


def timed(port: int, key: str, method: str, path: str, body: bytes | None, n: int, expect: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - t)
        if response.status != expect:
            raise SystemExit(f"{method} {path[:60]}: {response.status}, expected {expect}")
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    n = args.n
    deep = b'{"symbol": "AAPL", "quantity": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = b'{"symbol": "' + b"A" * (10 * 1024 * 1024) + b'"}'
    with stack() as (_sim_port, port, key):
        print(f"hostile requests through daphne, n={n}")
        served = summary(
            "bars 1 day / 1 M (served by the broker)",
            timed(port, key, "GET", "/api/v1/bars/AAPL/?bar_size=1%20day&duration=1%20M", None, n, 200),
        )
        refused = summary(
            "bars 1 secs / 365 D (400 historical_limit)",
            timed(port, key, "GET", "/api/v1/bars/AAPL/?bar_size=1%20secs&duration=365%20D", None, n, 400),
        )
        summary(
            "quote AAPL%00STK%00SMART%00USD (400)",
            timed(port, key, "GET", "/api/v1/quotes/AAPL%00STK%00SMART%00USD/", None, n, 400),
        )
        summary("order, JSON 100,000 deep (400)", timed(port, key, "POST", "/api/v1/orders/", deep, n, 400))
        summary("order, 10 MB body (413)", timed(port, key, "POST", "/api/v1/orders/", huge, max(3, n // 10), 413))
        print(f"  refused/served bars p50 ratio: {refused['p50_ms'] / served['p50_ms']:.3f}")


if __name__ == "__main__":
    main()
