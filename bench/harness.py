"""Shared set-up for the benchmarks: a simulated gateway and a real web server, each in its own process.

Everything runs on loopback with a throwaway SQLite database; nothing here is used by the product.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    row = {"name": name, "n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "mean_ms": statistics.mean(ms)}
    print(f"  {name:<44} n={row['n']:<5} p50={row['p50_ms']:7.3f} ms  p99={row['p99_ms']:7.3f} ms")
    return row


def server_command(port: int, server: str = "production") -> list[str]:
    """The command line of one web process on `port`: the production server (scripts/serve.sh) or daphne."""
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "ibkrgw.asgi:application"]
    return [sys.executable, "-m", "ibkrgw.serve", "--host", "127.0.0.1", "--port", str(port)]


_servers: dict[int, int] = {}  # web server port -> its process id


def server_cpu_s(http_port: int) -> float:
    """CPU seconds (user + system) the web server on `http_port` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{_servers[http_port]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def stack(
    *,
    orders_enabled: bool = True,
    extra_env: dict | None = None,
    tick_interval: float = 0.25,
    server: str = "production",
    sim_args: tuple[str, ...] = (),
):
    """Start ibsim and a web server (sharing a temp database); yield (sim_port, http_port, api_key).

    `sim_args`: extra `manage.py ibsim` options."""
    workdir = Path(tempfile.mkdtemp(prefix="ibkrgw-bench-"))
    sim_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ibkrgw.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "IB_GATEWAY": f"127.0.0.1:{sim_port}",
        "TRADING_HOURS": "always",
        "IB_THROTTLE": "false",
        "ORDERS_ENABLED": "true" if orders_enabled else "false",
        "RISK_MAX_ORDERS_PER_MINUTE": "1000000",
        "RISK_MAX_ORDER_QUANTITY": "1000000",
        "RISK_MAX_ORDER_NOTIONAL": "1000000000",
        "RISK_DUPLICATE_WINDOW_S": "0",
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    py = sys.executable
    procs = []
    try:
        subprocess.run([py, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run(
            [py, "manage.py", "apikey", "create", "--name", "bench", "--scope", "trade"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        key = out.strip().splitlines()[-1].strip()
        procs.append(
            subprocess.Popen(
                [py, "manage.py", "ibsim", "--port", str(sim_port), "--tick-interval", str(tick_interval)]
                + ["--trading-hours", "always", "--no-ib-limits", *sim_args],  # load tests at any hour
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        wait_port(sim_port)
        procs.append(
            subprocess.Popen(
                server_command(http_port, server),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(http_port)
        _servers[http_port] = procs[-1].pid
        api = Api(http_port, key)
        deadline = time.monotonic() + 30
        while api.get("/api/v1/health/")[1]["reconciliation"] != "done":
            if time.monotonic() > deadline:
                raise RuntimeError("gateway never became ready")
            time.sleep(0.1)
        # The benchmark process itself may use Django (service-layer measurements): same database.
        for name in ("DATABASE_URL", "IB_THROTTLE", "TRADING_HOURS", "LOG_LEVEL"):
            os.environ[name] = env[name]
        yield sim_port, http_port, key
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


class Api:
    """A keep-alive HTTP client, like a script polling the gateway would use."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    def get(self, path: str) -> tuple[int, dict]:
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())


def order_rate(ports: list[int], key: str, n: int, threads: int, tag: str) -> float:
    """REST orders per second: `threads` clients, client i posting MKT orders to ports[i % len(ports)]."""
    import threading

    per_thread = n // threads
    errors: list = []

    def client(idx: int) -> None:
        api = Api(ports[idx % len(ports)], key)
        for i in range(per_thread):
            body = {"client_order_id": f"bench-{tag}-{idx}-{i}", "symbol": "MSFT", "action": "BUY", "quantity": "1"}
            status, answer = api.post("/api/v1/orders/", {**body, "order_type": "MKT"})
            if status != 201:
                errors.append(answer)

    pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} orders failed, e.g. {errors[0]}")
    return per_thread * threads / elapsed
