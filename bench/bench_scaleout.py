"""REST order throughput: two web processes on PostgreSQL + Redis against one process on SQLite.

    .venv/bin/python bench/bench_scaleout.py [--orders 400] [--threads 8] [--simulated]

Both set-ups trade against one simulated gateway (`manage.py ibsim`, its own process). In the
scale-out set-up the processes elect one owner of the IB connection; clients are spread evenly over
both processes (as a load balancer would), so half the orders travel follower -> Redis -> owner.
Needs redis-server and PostgreSQL 15 binaries (run as root, PostgreSQL runs as `ibkrgwci`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import order_rate  # noqa: E402
from tests.scaleout.cluster import (  # noqa: E402
    ROOT,
    Api,
    base_env,
    free_port,
    postgres_available,
    postgres_database,
    prepare_database,
    redis_server,
    sqlite_database,
    start_web,
    wait_port,
)

RISK_OFF = {
    "RISK_MAX_ORDERS_PER_MINUTE": "1000000",
    "RISK_MAX_ORDER_QUANTITY": "1000000",
    "RISK_MAX_ORDER_NOTIONAL": "1000000000",
    "RISK_DUPLICATE_WINDOW_S": "0",
}


@contextmanager
def ibsim():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "ibsim", "--port", str(port), "--trading-hours", "always", "--no-ib-limits"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def web_processes(*, database_url: str, sim_port: int, redis_url: str | None, count: int, simulated: bool = False):
    """Start `count` daphne processes on one database; yield (ports, api key) once all serve.
    `simulated`: ORDERS_ENABLED=false (every gate, the intent recorded, nothing sent)."""
    env = base_env(database_url=database_url, gateway_port=sim_port, channel_layer_url=redis_url)
    env.update(RISK_OFF)
    if simulated:
        env["ORDERS_ENABLED"] = "false"
    key = prepare_database(env)
    with tempfile.TemporaryDirectory(prefix="ibkrgw-bench-") as logdir:
        web = [start_web(env, Path(logdir), f"web{i}") for i in range(count)]
        try:
            for process in web:
                wait_port(process.port, proc=process.proc)
                api, deadline = Api(process.port, key), time.monotonic() + 60
                while api.get("/api/v1/health/")[1].get("reconciliation") != "done":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"web process never became ready:\n{process.log_tail()}")
                    time.sleep(0.1)
            yield [p.port for p in web], key
        finally:
            for process in web:
                process.stop()


def warm_up(ports: list[int], key: str, tag: str) -> None:
    """Warm every process (contract cache, connections) outside the measurement."""
    for port in ports:
        Api(port, key).post(
            "/api/v1/orders/",
            {"client_order_id": f"warm-{tag}-{port}", "symbol": "MSFT", "action": "BUY", "quantity": "1"}
            | {"order_type": "MKT"},
        )


def measure(ports: list[int], key: str, n: int, threads: int, tag: str) -> float:
    warm_up(ports, key, tag)
    return order_rate(ports, key, n, threads, tag)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--simulated", action="store_true", help="orders disabled: the simulated path, nothing sent")
    args = parser.parse_args()
    sim = args.simulated
    results: dict[str, float] = {}
    with ibsim() as sim_port:
        with (
            sqlite_database() as url,
            web_processes(database_url=url, sim_port=sim_port, redis_url=None, count=1, simulated=sim) as (
                ports,
                key,
            ),
        ):
            results["1 process, SQLite"] = measure(ports, key, args.orders, args.threads, "sqlite")
        if not postgres_available():
            print("PostgreSQL is not available here: skipped the two-process run")
        else:
            with postgres_database(durable=True) as url:
                # The same single process on PostgreSQL separates the database's share from the Redis hop's.
                with web_processes(database_url=url, sim_port=sim_port, redis_url=None, count=1, simulated=sim) as (
                    ports,
                    key,
                ):
                    results["1 process, PostgreSQL"] = measure(ports, key, args.orders, args.threads, "pg1")
                with ExitStack() as stack:
                    redis_url = stack.enter_context(redis_server())
                    ports, key = stack.enter_context(
                        web_processes(database_url=url, sim_port=sim_port, redis_url=redis_url, count=2, simulated=sim)
                    )
                    results["2 processes, PostgreSQL + Redis"] = measure(ports, key, args.orders, args.threads, "pg2")
    path = "simulated path, nothing sent" if sim else "sent to the simulated gateway"
    print(f"REST POST orders/ throughput ({args.orders} orders, {args.threads} clients, loopback, {path}):")
    for name, rate in results.items():
        print(f"  {name:<34} {rate:8.1f} orders/s")
    if len(results) == 3:
        single, _, scaled = results.values()
        print(f"  ratio two processes (PostgreSQL) / one process (SQLite) = {scaled / single:.2f}x")


if __name__ == "__main__":
    main()
