"""Read paths through REST against bare ib_async on the same simulated gateway, in one run.

    .venv/bin/python bench/bench_read.py [--calls 200] [--server production|daphne] [--seconds 5]

Prints p50/p99 of a snapshot quote, a quote from a held stream, the account summary and positions
(a keep-alive HTTP client, as a polling script would use), next to bare ib_async's reqTickers and
reqPositions; then requests/s with 8 concurrent keep-alive clients on held quotes, and the cold start
of a fresh web process (process start to its first quote served).
Goals: snapshot <= 4x bare reqTickers; held stream, account summary <= 3x bare reqTickers;
positions <= 4x bare reqPositions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, Api, free_port, server_command, stack, summary  # noqa: E402

# Benchmarks poll far faster than the default read throttle; the throttle still runs on every call.
UNTHROTTLED = {"API_READ_RATE": "100000000/min"}


def bare(port: int, n: int) -> tuple[list[float], list[float]]:
    """ib_async alone: reqTickers (snapshot) and reqPositions round trips."""
    from ib_async import IB, Stock

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=50, timeout=10)
    ib.client.MaxRequests = 0
    (contract,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    ib.reqTickers(contract)
    ib.reqPositions()
    tickers, positions = [], []
    for _ in range(n):
        t = time.perf_counter()
        ib.reqTickers(contract)
        tickers.append(time.perf_counter() - t)
    for _ in range(n):
        t = time.perf_counter()
        ib.reqPositions()
        positions.append(time.perf_counter() - t)
    ib.disconnect()
    return tickers, positions


def rest(api: Api, path: str, n: int, check=None) -> list[float]:
    status, body = api.get(path)  # warm: contract cache, subscription, account subscription
    assert status == 200, body
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, body = api.get(path)
        times.append(time.perf_counter() - t)
        assert status == 200, body
        if check:
            check(body)
    return times


def throughput(port: int, key: str, clients: int, seconds: float) -> tuple[float, int]:
    """Requests/s of `clients` keep-alive clients asking for a held quote for `seconds`."""
    path = "/api/v1/quotes/AAPL/?stream=true"
    counts = [0] * clients
    errors: list = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        api = Api(port, key)
        api.get(path)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            status, body = api.get(path)
            if status != 200:
                errors.append(body)
                return
            counts[i] += 1

    pool = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in pool:
        th.start()
    stop_at[0] = time.perf_counter() + 3600
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{len(errors)} quote requests failed, e.g. {errors[0]}")
    return sum(counts) / elapsed, sum(counts)


def cold_start(sim_port: int, key: str, server: str) -> float:
    """Seconds from starting a new web process (own IB client id, same database) to its first quote."""
    port = free_port()
    env = {**os.environ, **UNTHROTTLED, "IB_GATEWAY": f"127.0.0.1:{sim_port}", "IB_CLIENT_ID": "61"}
    began = time.perf_counter()
    proc = subprocess.Popen(
        server_command(port, server), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = began + 60
        while time.perf_counter() < deadline:
            try:
                status, _ = Api(port, key).get("/api/v1/quotes/AAPL/")
            except OSError:
                time.sleep(0.01)
                continue
            if status == 200:
                return time.perf_counter() - began
            time.sleep(0.01)
        raise SystemExit("the new web process never served a quote")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--server", choices=["production", "daphne"], default="production")
    args = parser.parse_args()
    n = args.calls
    # Back-to-back calls (bare and REST alike) go far over IB's 50 messages/s: the harness turns the
    # simulator's limits off.
    with stack(orders_enabled=False, extra_env=UNTHROTTLED, server=args.server) as (sim_port, http_port, key):
        api = Api(http_port, key)
        print(f"read latency, {args.server} server (same simulated gateway, loopback, keep-alive client):")
        tickers, positions = bare(sim_port, n)
        b_snap = summary("bare ib_async reqTickers (snapshot)", tickers)
        b_pos = summary("bare ib_async reqPositions", positions)

        def source(expected):
            def check(body):
                assert body["source"] == expected, body["source"]

            return check

        snap = summary("REST quotes/AAPL/ (snapshot)", rest(api, "/api/v1/quotes/AAPL/", n, source("snapshot")))
        held = summary(
            "REST quotes/AAPL/?stream=true (held stream)",
            rest(api, "/api/v1/quotes/AAPL/?stream=true", n, source("stream")),
        )
        acct = summary("REST account/summary/", rest(api, "/api/v1/account/summary/", n))
        pos = summary("REST account/positions/", rest(api, "/api/v1/account/positions/", n))
        health = summary("REST health/", rest(api, "/api/v1/health/", n))
        rows = [
            ("snapshot quote / bare reqTickers", snap, b_snap, 4),
            ("held-stream quote / bare reqTickers", held, b_snap, 3),
            ("account summary / bare reqTickers", acct, b_snap, 3),
            ("positions / bare reqPositions", pos, b_pos, 4),
            ("health / bare reqTickers", health, b_snap, None),
        ]
        print("ratios (p50):")
        for name, ours, theirs, goal in rows:
            ratio = ours["p50_ms"] / theirs["p50_ms"]
            verdict = "" if goal is None else f"goal <= {goal}x  {'ok' if ratio <= goal else 'MISSED'}"
            print(f"  {name:<40} {ratio:6.2f}x   {verdict}")
        rate, total = throughput(http_port, key, args.clients, args.seconds)
        print(
            f"throughput: {args.clients} keep-alive clients on a held quote: {rate:8.1f} requests/s "
            f"({total} in {args.seconds:g} s)"
        )
        cold = cold_start(sim_port, key, args.server)
        print(f"cold start: process start to first quote served: {cold:6.2f} s")


if __name__ == "__main__":
    main()
