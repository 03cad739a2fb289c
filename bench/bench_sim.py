"""Benchmark the simulated IB Gateway with a real ib_async client (no Django).

    python bench/bench_sim.py [--seconds 3] [--tick-interval 0.005] [--orders 300]

Measures
* ticks/second delivered to one ib_async client (several streaming subscriptions),
* snapshot round trips/second (reqTickers),
* order round trips/second (placeOrder MKT -> Filled seen by the client).

ib_async throttles to Client.MaxRequests (45) per RequestsInterval (1 s) by default;
it is set to 0 here (disabled) so the numbers measure the gateway, not the throttle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from decimal import Decimal

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ib_async import IB, MarketOrder, Stock, util  # noqa: E402
from ib_async.client import Client  # noqa: E402

from brokers.sim import SimGateway  # noqa: E402

SYMBOLS = ["AAPL", "MSFT", "TSLA", "NVDA", "SPY", "QQQ"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--tick-interval", type=float, default=0.005)
    ap.add_argument("--orders", type=int, default=300)
    args = ap.parse_args()

    Client.MaxRequests = 0  # disable ib_async's client-side request throttling
    # A load test: the market never closes and IB's pacing limits are off (they would stop the run).
    gw = SimGateway(
        port=0,
        seed=7,
        tick_interval=args.tick_interval,
        partial_fill_threshold=None,
        trading_hours="always",
        ib_limits=False,
    ).start()
    ib = IB()
    try:
        t0 = time.perf_counter()
        ib.connect("127.0.0.1", gw.port, clientId=1, timeout=5, raiseSyncErrors=True)
        connect_ms = (time.perf_counter() - t0) * 1000
        contracts = ib.qualifyContracts(*[Stock(s, "SMART", "USD") for s in SYMBOLS])

        # --- streaming ticks
        count = 0

        def on_pending(tickers) -> None:
            nonlocal count
            count += sum(len(t.ticks) for t in tickers)

        ib.pendingTickersEvent += on_pending
        for c in contracts:
            ib.reqMktData(c)
        ib.sleep(0.3)
        count = 0
        t0 = time.perf_counter()
        ib.sleep(args.seconds)
        elapsed = time.perf_counter() - t0
        ticks_per_s = count / elapsed
        for c in contracts:
            ib.cancelMktData(c)
        ib.pendingTickersEvent -= on_pending
        gw.pause_market()

        # --- snapshots
        n_snap = 200
        t0 = time.perf_counter()
        for i in range(n_snap):
            ib.reqTickers(contracts[i % len(contracts)])
        snaps_per_s = n_snap / (time.perf_counter() - t0)

        # --- order round trips
        aapl = contracts[0]

        async def round_trips() -> None:
            # Wait on each trade's own completion event: polling ib.waitOnUpdate() can miss an update
            # that lands while it is not waiting and then sits out its whole timeout.
            for i in range(args.orders):
                trade = ib.placeOrder(aapl, MarketOrder("BUY" if i % 2 == 0 else "SELL", 10))
                done = asyncio.Event()
                trade.filledEvent += lambda _t, done=done: done.set()
                trade.cancelledEvent += lambda _t, done=done: done.set()
                if not trade.isDone():
                    await asyncio.wait_for(done.wait(), 5)

        t0 = time.perf_counter()
        util.run(round_trips())
        orders_per_s = args.orders / (time.perf_counter() - t0)
        assert len(gw.executions()) == args.orders
        assert gw.positions().get(aapl.conId, Decimal(0)) == 0

        print(f"connect (IB.connect incl. startup sync): {connect_ms:8.1f} ms")
        print(
            f"streaming ticks delivered:  {ticks_per_s:10.0f} ticks/s "
            f"({len(contracts)} subscriptions, tick_interval={args.tick_interval}s, {args.seconds:.0f}s)"
        )
        print(f"snapshot round trips:       {snaps_per_s:10.0f} reqTickers/s")
        print(
            f"order round trips:          {orders_per_s:10.0f} orders/s (MKT placeOrder -> Filled, "
            f"{args.orders} orders, throttling disabled)"
        )
    finally:
        ib.disconnect()
        gw.stop()


if __name__ == "__main__":
    main()
