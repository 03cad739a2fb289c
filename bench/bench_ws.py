"""Benchmark the websocket quote fan-out: tick -> client latency.

    python bench/bench_ws.py [--seconds 5] [--tick-interval 0.01]

Starts, in this process: the simulated IB Gateway (small tick interval), the IB worker runtime, and
many websocket clients of `ibkrgw.asgi.application` on one event loop (the ASGI loop), connected at the
ASGI boundary (where daphne would write to the socket). Scenarios: 200 clients watching one contract;
20 contracts x 10 clients.

Latency is measured from the worker's receipt of the tick (`Quote.received_at`, stamped on the IB
loop thread; the simulator does not stamp its sends) to the frame being handed to the client's
transport; frames are matched to ticks by their content.
Clients coalesce to the latest quote per contract, so a client may receive fewer frames than ticks.
Goal: p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKDIR = Path(tempfile.mkdtemp(prefix="ibkrgw-bench-ws-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="ibkrgw.settings",
    DATABASE_URL=f"sqlite:///{WORKDIR / 'db.sqlite3'}",
    IB_THROTTLE="false",  # the simulated gateway does not disconnect fast clients
    IBKRGW_NO_BROKER="1",  # this script starts the runtime itself, against its own simulator
    TRADING_HOURS="always",
    LOG_LEVEL="WARNING",
)
os.environ.pop("CHANNEL_LAYER_URL", None)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from brokers import runtime  # noqa: E402
from brokers.sim import SimGateway  # noqa: E402
from ibkrgw.models import ScopedAPIKey  # noqa: E402
from ibkrgw.web.render import decimal_str  # noqa: E402

FIELDS = ("bid", "ask", "last", "bid_size", "ask_size", "volume")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class TickClock:
    """The worker's quote listener: remembers when the worker received each distinct quote."""

    def __init__(self) -> None:
        self.received: dict[tuple, float] = {}
        self.ticks: dict[int, int] = {}
        self._lock = threading.Lock()

    def __call__(self, quote) -> None:
        key = (quote.con_id, *(decimal_str(getattr(quote, f)) for f in FIELDS))
        with self._lock:
            self.received.setdefault(key, quote.received_at.timestamp())
            self.ticks[quote.con_id] = self.ticks.get(quote.con_id, 0) + 1

    def sent_at(self, frame: dict) -> float | None:
        return self.received.get((frame["con_id"], *(frame[f] for f in FIELDS)))


class AsgiClient:
    """A websocket client at the ASGI boundary: `send` is where a server would write to the socket, so the
    measured latency is the gateway's own (tick -> frame handed to the transport), without client overhead."""

    def __init__(self, application, key: str) -> None:
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.received: list[tuple[float, str]] = []
        self.subscribed = asyncio.Event()
        scope = {
            "type": "websocket",
            "path": "/ws/quotes/",
            "raw_path": b"/ws/quotes/",
            "query_string": b"",
            "headers": [(b"origin", b"http://localhost"), (b"authorization", f"Api-Key {key}".encode())],
            "subprotocols": [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        self.task = asyncio.get_running_loop().create_task(application(scope, self.inbox.get, self._send))

    async def _send(self, message: dict) -> None:
        if message["type"] == "websocket.send":
            if message["text"].startswith('{"type":"subscribed"'):
                self.subscribed.set()
            else:
                self.received.append((time.time(), message["text"]))

    async def subscribe(self, con_id: int) -> None:
        await self.inbox.put({"type": "websocket.connect"})
        await self.inbox.put(
            {
                "type": "websocket.receive",
                "text": json.dumps({"action": "subscribe", "contracts": [{"con_id": con_id}]}),
            }
        )
        await asyncio.wait_for(self.subscribed.wait(), 30)

    async def close(self) -> None:
        await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 10)


async def run_scenario(name: str, con_ids: list[int], per_contract: int, key: str, clock: TickClock, seconds: float):
    from ibkrgw.asgi import application

    clients = [AsgiClient(application, key) for _ in con_ids for _ in range(per_contract)]
    await asyncio.gather(*(c.subscribe(con_ids[i // per_contract]) for i, c in enumerate(clients)))
    await asyncio.sleep(0.5)  # let the first full ticks settle
    for c in clients:
        c.received.clear()
    ticks_before = sum(clock.ticks.get(c, 0) for c in con_ids)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    ticks = sum(clock.ticks.get(c, 0) for c in con_ids) - ticks_before
    received = [item for c in clients for item in c.received]
    await asyncio.gather(*(c.close() for c in clients))

    latencies = []
    for at, text in received:
        frame = json.loads(text)
        sent = clock.sent_at(frame) if frame["type"] == "quote" else None
        if sent is not None:
            latencies.append((at - sent) * 1000)
    if not latencies:
        print(f"  {name}: no frames")
        return
    print(
        f"  {name:<26} clients={len(clients):<4} contracts={len(con_ids):<3} gateway ticks/s={ticks / elapsed:7.1f}"
        f"  frames/s={len(latencies) / elapsed:8.1f}"
        f"  latency p50={pct(latencies, 50):6.2f} ms  p99={pct(latencies, 99):6.2f} ms"
        f"  max={max(latencies):6.2f} ms"
    )


async def main_async(args, key: str, clock: TickClock, con_ids: list[int]) -> None:
    await run_scenario("200 clients x 1 contract", con_ids[:1], 200, key, clock, args.seconds)
    await run_scenario("20 contracts x 10 clients", con_ids[:20], 10, key, clock, args.seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--tick-interval", type=float, default=0.01)
    args = ap.parse_args()

    call_command("migrate", verbosity=0)
    _, key = ScopedAPIKey.objects.create_key(name="bench-ws", scope="read")
    sim = SimGateway(port=0, seed=7, tick_interval=args.tick_interval, trading_hours="always", ib_limits=False).start()
    runtime.start(host="127.0.0.1", port=sim.port, client_id=1, wait=15)
    rt = runtime.current()
    clock = TickClock()
    rt.worker.add_quote_listener(clock)
    # Twenty contracts that tick: stocks first, then futures, FX and the rest (no options).
    order = {"STK": 0, "FUT": 1, "CASH": 2}
    ticking = sorted(
        (i for i in sim.market.instruments.values() if i.sec_type != "OPT" and i.con_id != sim.con_id("AAPL")),
        key=lambda i: (order.get(i.sec_type, 3), i.con_id),
    )
    con_ids = [sim.con_id("AAPL")] + [i.con_id for i in ticking][:19]
    print(f"bench_ws: sim tick interval {args.tick_interval}s, {args.seconds}s per scenario, in-process ASGI clients")
    try:
        asyncio.run(main_async(args, key, clock, con_ids))
    finally:
        runtime.stop()
        sim.stop()
        shutil.rmtree(WORKDIR, ignore_errors=True)


if __name__ == "__main__":
    main()
