"""Order throughput through every gate, against bare ib_async on the same simulated gateway.

    .venv/bin/python bench/bench_orders.py [--simulated 2000] [--sent 300] [--clients 8] [--rounds 3]

Prints, in one run:
  1. REST orders/s on the simulated path (ORDERS_ENABLED=false: every gate, intent recorded, nothing
     sent), with `--clients` keep-alive clients. Goal >= 300/s. Beside it, for scale, the rate of
     authenticated GETs of an empty list: about the floor Django and DRF put under any request.
  2. REST orders/s to the simulated gateway (placed -> filled) divided by bare ib_async
     placeOrder -> Filled, both paced at IB's 45 messages/s. Goal >= 0.9. The pair is measured
     `--rounds` times, each on a fresh gateway and web server; every round is printed, then the median
     (on a 2-core machine one round varies by several hundredths).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Api, order_rate, server_cpu_s, stack  # noqa: E402


def floor_rate(http_port: int, key: str, n: int, clients: int) -> float:
    """Authenticated GETs of an empty list per second (no fill exists on the simulated path): about what
    Django and DRF cost any request, its one query included."""
    import threading

    per_client = n // clients

    def client() -> None:
        api = Api(http_port, key)
        for _ in range(per_client):
            api.get("/api/v1/fills/?limit=1")

    pool = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return per_client * clients / (time.perf_counter() - started)


FILL_POLL_S = 0.05


def fills_count(api: Api) -> int:
    return api.get("/api/v1/fills/?limit=1")[1]["count"]


def rest_to_filled(http_port: int, key: str, n: int, clients: int) -> float:
    """Orders/s from the first POST until the broker has filled all of them (fills recorded)."""
    api = Api(http_port, key)
    before = fills_count(api)
    started = time.perf_counter()
    order_rate([http_port], key, n, clients, tag="sent")
    n = (n // clients) * clients
    # The POSTs are answered once their orders are queued at IB's pacing, a few seconds before the last
    # fill: poll for the fills every 50 ms (at most 50 ms late on a run of seconds), not so often that the
    # polls themselves (a full list request each) take the web server's time from the orders they wait for.
    while fills_count(api) < before + n:
        time.sleep(FILL_POLL_S)
    return n / (time.perf_counter() - started)


def bare_to_filled(sim_port: int, n: int) -> float:
    """Bare ib_async with its default 45 msg/s pacing: placeOrder n market orders, wait until all Filled."""
    from ib_async import IB, MarketOrder, Stock

    ib = IB()
    ib.connect("127.0.0.1", sim_port, clientId=60, timeout=10)
    try:
        contract = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))[0]
        started = time.perf_counter()
        trades = [ib.placeOrder(contract, MarketOrder("BUY", 1)) for _ in range(n)]
        while any(t.orderStatus.status != "Filled" for t in trades):
            ib.sleep(0.005)
        return n / (time.perf_counter() - started)
    finally:
        ib.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--simulated", type=int, default=2000)
    parser.add_argument("--sent", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; one run; SQLite; production web server; simulator in its own process")

    # Reads unthrottled: the GETs measured beside the orders must all be answered, not refused 429.
    with stack(orders_enabled=False, extra_env={"API_READ_RATE": "100000000/min"}) as (_, http_port, key):
        order_rate([http_port], key, 80, args.clients, tag="warm")
        cpu = server_cpu_s(http_port)
        rate = order_rate([http_port], key, args.simulated, args.clients, tag="sim")
        cpu_ms = (server_cpu_s(http_port) - cpu) * 1000 / (args.simulated // args.clients * args.clients)
        print(f"1. simulated path, {args.clients} clients: {rate:8.1f} orders/s   (goal >= 300)")
        print(f"   web server CPU per order: {cpu_ms:.1f} ms")
        floor_rate(http_port, key, 200, args.clients)
        cpu = server_cpu_s(http_port)
        floor = floor_rate(http_port, key, args.simulated, args.clients)
        floor_ms = (server_cpu_s(http_port) - cpu) * 1000 / (args.simulated // args.clients * args.clients)
        print(f"   for scale, GET fills/?limit=1, an empty list: {floor:8.1f} requests/s, {floor_ms:.1f} ms CPU each")

    print("2. paced at 45 msg/s, placed -> filled:")
    ratios = []
    for round_no in range(1, args.rounds + 1):
        bare, rest, cpu_ms = paced_round(args.sent, args.clients)
        ratios.append(rest / bare)
        print(
            f"   round {round_no}: bare ib_async {bare:6.1f} orders/s; REST {rest:6.1f} orders/s; "
            f"ratio {rest / bare:.2f}; web server CPU per order, placed -> filled and recorded: {cpu_ms:.1f} ms"
        )
    if ratios:
        print(f"   ratio REST / bare, median of {len(ratios)} = {statistics.median(ratios):.2f}   (goal >= 0.9)")


def paced_round(sent: int, clients: int) -> tuple[float, float, float]:
    """(bare orders/s, REST orders/s, web server CPU ms per order) on a fresh gateway and web server."""
    with stack(orders_enabled=True, extra_env={"IB_THROTTLE": "true"}) as (sim_port, http_port, key):
        bare = bare_to_filled(sim_port, sent)
        api = Api(http_port, key)
        order_rate([http_port], key, 16, clients, tag="warm")
        # Bare ib_async starts on a fresh connection: start REST the same way, its warm-up filled and
        # recorded and IB's one-second pacing window empty again (else the warm-up's sends use its burst).
        while fills_count(api) < 16:
            time.sleep(0.05)
        time.sleep(1.1)
        cpu = server_cpu_s(http_port)
        rest = rest_to_filled(http_port, key, sent, clients)
        cpu_ms = (server_cpu_s(http_port) - cpu) * 1000 / (sent // clients * clients)
    return bare, rest, cpu_ms


if __name__ == "__main__":
    main()
