"""REST vs bare ib_async on the same simulated gateway, in one run.

    .venv/bin/python bench/bench_rest.py [--quotes 300] [--orders 300] [--threads 4] [--latency 40]

Prints latency p50/p99 of a quote (REST snapshot, REST streaming-cached, bare ib_async snapshot), of one
order at a time (REST POST -> 201 against bare placeOrder -> acknowledged), and order throughput (REST
with every gate, audit and durable commits vs bare ib_async placeOrder acks), with their ratios.
Goals: REST snapshot <= 1.2x bare, cached <= 0.5x, orders >= 200/s and ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Api, order_rate, stack, summary  # noqa: E402


def bare_quotes(port: int, n: int) -> list[float]:
    from ib_async import IB, Stock

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=50, timeout=10)
    ib.client.MaxRequests = 0
    (contract,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        ib.reqTickers(contract)
        times.append(time.perf_counter() - t)
    ib.disconnect()
    return times


def rest_quotes(api: Api, n: int, stream: bool) -> list[float]:
    path = "/api/v1/quotes/AAPL/" + ("?stream=true" if stream else "")
    api.get(path)  # warm: contract cache (and the subscription when streaming)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, body = api.get(path)
        times.append(time.perf_counter() - t)
        assert status == 200, body
        assert body["source"] == ("stream" if stream else "snapshot"), body["source"]
    return times


def service_quotes(port: int, n: int) -> tuple[list[float], list[float]]:
    """The same quote through the service layer in this process (no HTTP): what the gateway itself adds."""
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    django.setup()
    from brokers import runtime
    from brokers.adapter import ContractSpec
    from marketdata.services import quote_get

    runtime.start(host="127.0.0.1", port=port, client_id=52, wait=10)
    spec = ContractSpec(symbol="AAPL")
    quote_get(spec=spec)
    snapshot, cached = [], []
    for _ in range(n):
        t = time.perf_counter()
        quote_get(spec=spec)
        snapshot.append(time.perf_counter() - t)
    quote_get(spec=spec, stream=True)
    for _ in range(n):
        t = time.perf_counter()
        quote_get(spec=spec, stream=True)
        cached.append(time.perf_counter() - t)
    runtime.stop()
    return snapshot, cached


def bare_orders(port: int, n: int) -> float:
    from ib_async import IB, MarketOrder, Stock

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=51, timeout=10)
    ib.client.MaxRequests = 0
    (contract,) = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))
    t = time.perf_counter()
    trades = [ib.placeOrder(contract, MarketOrder("BUY", 1)) for _ in range(n)]
    while any(tr.orderStatus.status in ("", "PendingSubmit") for tr in trades):
        ib.waitOnUpdate(timeout=1)
    elapsed = time.perf_counter() - t
    ib.disconnect()
    return n / elapsed


def bare_order_latency(port: int, n: int, pause: float) -> list[float]:
    """Bare ib_async, one market order at a time: placeOrder until the broker acknowledges it."""
    from ib_async import IB, MarketOrder, Stock

    ib = IB()
    ib.connect("127.0.0.1", port, clientId=53, timeout=10)
    (contract,) = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))
    times = []
    for i in range(n + 1):  # the first one is a warm-up, not counted
        t = time.perf_counter()
        trade = ib.placeOrder(contract, MarketOrder("BUY", 1))
        while trade.orderStatus.status in ("", "PendingSubmit"):
            ib.sleep(0.0002)  # polls: waitOnUpdate() here sometimes wakes only 100 ms later
        if i:
            times.append(time.perf_counter() - t)
        ib.sleep(pause)
    ib.disconnect()
    return times


def rest_order_latency(api: Api, n: int, pause: float) -> list[float]:
    """REST, one market order at a time through every gate: POST until the 201 (acknowledgement recorded)."""
    times = []
    for i in range(n + 1):  # the first one is a warm-up, not counted
        body = {"client_order_id": f"lat-{i}", "symbol": "MSFT", "action": "BUY", "quantity": "1", "order_type": "MKT"}
        t = time.perf_counter()
        status, answer = api.post("/api/v1/orders/", body)
        assert status == 201, answer
        if i:
            times.append(time.perf_counter() - t)
        time.sleep(pause)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quotes", type=int, default=300)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--latency", type=int, default=40, help="orders placed one at a time, each way")
    args = parser.parse_args()
    with stack(orders_enabled=True) as (sim_port, http_port, key):
        api = Api(http_port, key)
        print("quote latency (same simulated gateway, loopback):")
        bare = summary("bare ib_async reqTickers (snapshot)", bare_quotes(sim_port, args.quotes))
        snap = summary("REST GET quotes/AAPL/ (snapshot)", rest_quotes(api, args.quotes, stream=False))
        cached = summary("REST GET quotes/AAPL/?stream=true (cached)", rest_quotes(api, args.quotes, stream=True))
        print(
            f"  ratio snapshot/bare p50 = {snap['p50_ms'] / bare['p50_ms']:.2f}x "
            f"(p99 {snap['p99_ms'] / bare['p99_ms']:.2f}x)   goal <= 1.2x"
        )
        print(
            f"  ratio cached/bare   p50 = {cached['p50_ms'] / bare['p50_ms']:.2f}x "
            f"(p99 {cached['p99_ms'] / bare['p99_ms']:.2f}x)   goal <= 0.5x"
        )
        svc_snap, svc_cached = service_quotes(sim_port, args.quotes)
        svc = summary("service layer quote_get (snapshot, no HTTP)", svc_snap)
        svc_c = summary("service layer quote_get (cached, no HTTP)", svc_cached)
        print(
            f"  ratio service snapshot/bare p50 = {svc['p50_ms'] / bare['p50_ms']:.2f}x, "
            f"cached/bare = {svc_c['p50_ms'] / bare['p50_ms']:.2f}x  (what the gateway adds before HTTP)"
        )
        print("order latency, one at a time on a quiet gateway (market orders; the last one filled meanwhile):")
        bare_one = summary("bare ib_async placeOrder -> acknowledged", bare_order_latency(sim_port, args.latency, 0.1))
        rest_one = summary("REST POST orders/ -> 201, every gate", rest_order_latency(api, args.latency, 0.1))
        print(
            f"  ratio REST/bare p50 = {rest_one['p50_ms'] / bare_one['p50_ms']:.2f}x "
            f"(p99 {rest_one['p99_ms'] / bare_one['p99_ms']:.2f}x): the intent and the acknowledgement are each "
            "committed to disk, with their audit entries and seals"
        )
        print("order throughput:")
        bare_rate = bare_orders(sim_port, args.orders)
        print(f"  bare ib_async placeOrder acks          {bare_rate:8.1f} orders/s")
        rest_seq = order_rate([http_port], key, args.orders, 1, tag="seq")
        print(f"  REST POST orders/ (1 client)           {rest_seq:8.1f} orders/s")
        rest_par = order_rate([http_port], key, args.orders, args.threads, tag="par")
        print(f"  REST POST orders/ ({args.threads} clients)          {rest_par:8.1f} orders/s")
        best = max(rest_seq, rest_par)
        print(f"  ratio REST/bare = {best / bare_rate:.2f}   goals: >= 200 orders/s, ratio >= 0.5")


if __name__ == "__main__":
    main()
