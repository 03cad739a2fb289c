"""What an agent gets from `manage.py mcp`: start-up of several clients at once, and answer sizes.

    python bench/bench_mcp.py [--clients 2] [--calls 20]

Starts a simulated IB Gateway, migrates a throwaway SQLite database, then starts `--clients`
stdio MCP servers with one configuration (as Claude Desktop and an editor would) and drives them
with the MCP SDK's client. Prints, for each client, the time from spawn to a first quote and the
IB client id it got; the mean get_quote round trip; and the size in bytes of typical answers
(bounded defaults against the largest answer a caller can ask for).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")

import django  # noqa: E402

django.setup()

from brokers.sim import SimGateway  # noqa: E402
from tests.mcp.conftest import stdio_mcp  # noqa: E402

# Hundreds of bars at any time of day (extended hours included).
WEEK = {"bar_size": "5 mins", "duration": "1 W", "use_rth": False}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()

    gw = SimGateway(port=0, seed=7, trading_hours="always", ib_limits=False).start()
    db = os.path.join(tempfile.mkdtemp(), "bench-mcp.sqlite3")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "ibkrgw.settings",
        "DATABASE_URL": f"sqlite:///{db}",
        "IB_GATEWAY": f"127.0.0.1:{gw.port}",
        "TRADING_HOURS": "always",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    try:
        with ExitStack() as stack:
            clients = []
            for n in range(args.clients):
                started = time.perf_counter()
                client = stack.enter_context(stdio_mcp(env))
                client.json("get_quote", {"symbol": "AAPL"})
                elapsed = time.perf_counter() - started
                client_id = client.json("get_health")["gateway"]["client_id"]
                print(f"client {n + 1}: first quote {elapsed:.2f} s after spawn, IB client id {client_id}")
                clients.append(client)

            started = time.perf_counter()
            for _ in range(args.calls):
                for client in clients:
                    client.json("get_quote", {"symbol": "MSFT"})
            per_call = (time.perf_counter() - started) / (args.calls * len(clients))
            print(f"get_quote round trip: {per_call * 1000:.1f} ms (mean of {args.calls * len(clients)})")

            client = clients[0]
            sizes = [
                ("get_bars 5 mins x 1 W, all hours (default limit 100)", "get_bars", WEEK),
                ("get_bars 5 mins x 1 W, all hours (limit 5000)", "get_bars", {**WEEK, "limit": 5000}),
                ("get_quote AAPL OPT (ambiguous error)", "get_quote", {"sec_type": "OPT"}),
                ("get_option_chain AAPL", "get_option_chain", {}),
            ]
            for label, tool, extra in sizes:
                result = client.call(tool, {"symbol": "AAPL", **extra})
                print(f"{label}: {len(result.content[0].text)} bytes")
            expiry = client.json("get_option_chain", {"symbol": "AAPL"})["expiries"][0]
            started = time.perf_counter()
            result = client.call("get_option_chain", {"symbol": "AAPL", "expiry": expiry})
            print(
                f"get_option_chain AAPL {expiry} (10 strikes x C/P quoted): {len(result.content[0].text)} bytes, "
                f"{time.perf_counter() - started:.2f} s"
            )
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
