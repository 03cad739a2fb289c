"""Two real web processes share one IB connection through Redis; the survivor takes over when the owner dies.

Runs on PostgreSQL when its binaries are here (as CI has), otherwise on a shared SQLite file
(SCALEOUT_DB=sqlite forces that). Needs redis-server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.scaleout.cluster import (
    Api,
    WebProcess,
    WebSocket,
    base_env,
    lease_holder_pid,
    postgres_available,
    postgres_database,
    prepare_database,
    redis_server,
    sqlite_database,
    start_web,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
LEASE_TTL_S = 6  # long enough that a call made right after the kill sees no owner at all


@dataclass
class Cluster:
    env: dict[str, str]
    key: str
    web: dict[int, WebProcess]  # by pid
    vendor: str

    def api(self, process: WebProcess) -> Api:
        return Api(process.port, self.key)

    def owner_and_follower(self) -> tuple[WebProcess, WebProcess]:
        pid = wait_for(lambda: lease_holder_pid(self.env), timeout=30, message="a process holds the lease")
        owner = self.web[pid]
        (follower,) = [p for p in self.web.values() if p is not owner]
        return owner, follower


@pytest.fixture
def lease_ttl_s() -> int:
    return LEASE_TTL_S


@pytest.fixture
def cluster(sim_gateway, lease_ttl_s) -> Iterator[Cluster]:
    use_postgres = postgres_available() and os.environ.get("SCALEOUT_DB") != "sqlite"
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database(durable=False) if use_postgres else sqlite_database())
        redis_url = stack.enter_context(redis_server())
        env = base_env(database_url=database_url, gateway_port=sim_gateway.port, channel_layer_url=redis_url)
        env.update(IB_LEASE_TTL_S=str(lease_ttl_s), IB_LEASE_RENEW_S="1", IB_CONNECTION_OWNER="auto")
        key = prepare_database(env)
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ibkrgw-scaleout-")))
        web = [start_web(env, logdir, name) for name in ("a", "b")]
        try:
            for process in web:
                api = Api(process.port, key)
                wait_for(lambda api=api: _ready(api), timeout=40, interval=0.2, message="both processes serve")
            yield Cluster(
                env=env, key=key, web={p.pid: p for p in web}, vendor="postgresql" if use_postgres else "sqlite"
            )
        finally:
            for process in web:
                process.stop()
                print(f"--- {process.log.name} (pid {process.pid}) ---\n{process.log_tail()}")  # shown on failure


def _ready(api: Api) -> bool:
    try:
        status, body = api.get("/api/v1/health/")
    except OSError:
        return False
    return status == 200 and body["reconciliation"] == "done"


def _sent(sim_gateway, client_order_id: str) -> int:
    return len([o for o in sim_gateway.received_orders() if o.order_ref == client_order_id and not o.what_if])


def _order(api: Api, client_order_id: str, quantity: str = "5") -> tuple[int, dict]:
    return api.post(
        "/api/v1/orders/",
        {
            "client_order_id": client_order_id,
            "symbol": "AAPL",
            "action": "BUY",
            "quantity": quantity,
            "order_type": "MKT",
        },
    )


def _status(api: Api, order_id: str) -> str:
    return api.get(f"/api/v1/orders/{order_id}/")[1]["status"]


def test_follower_trades_through_the_owner_and_takes_over_when_it_dies(cluster, sim_gateway):
    owner, follower = cluster.owner_and_follower()
    api = cluster.api(follower)

    # Health, quotes and orders from the process that does not hold the IB connection.
    status, health = api.get("/api/v1/health/")
    assert status == 200 and health["gateway"]["connected"] and health["reconciliation"] == "done"
    assert health["database"]["vendor"] == cluster.vendor
    status, quote = api.get("/api/v1/quotes/AAPL/")
    assert status == 200 and quote["bid"] and quote["ask"], quote
    # A streaming subscription lives in the owner; the follower reads its cache.
    wait_for(lambda: api.get("/api/v1/quotes/MSFT/?stream=true")[1].get("source") == "stream", message="streamed")

    # Websocket quotes on the follower: the owner holds the subscription and relays its ticks.
    ws = WebSocket(follower.port, "/ws/quotes/", cluster.key)
    try:
        ws.send_json({"action": "subscribe", "symbols": ["NVDA"]})
        frame = ws.receive_json()
        while frame["type"] != "quote":
            assert frame["type"] == "subscribed", frame
            frame = ws.receive_json()
        assert frame["symbol"] == "NVDA" and frame["bid"], frame
    finally:
        ws.close()

    status, placed = _order(api, "scaleout-1")
    assert status == 201, placed
    wait_for(lambda: _status(api, placed["id"]) == "filled", message="filled")
    assert _sent(sim_gateway, "scaleout-1") == 1
    assert placed["broker_order_id"] is not None  # the follower recorded the owner's acknowledgement

    # The owner dies without a goodbye; its lease runs out.
    owner.kill9()
    started = time.monotonic()
    status, body = api.get("/api/v1/quotes/AAPL/")
    # Nobody owns the connection yet: a bounded 503, not a hang.
    assert status == 503 and body["error"]["code"] == "broker_unavailable", body
    assert time.monotonic() - started < LEASE_TTL_S

    wait_for(lambda: lease_holder_pid(cluster.env) == follower.pid, timeout=30, interval=0.5, message="takeover")
    wait_for(lambda: _ready(api), timeout=30, interval=0.2, message="the survivor connected and reconciled")
    health = api.get("/api/v1/health/")[1]
    assert health["gateway"]["connected"] and health["gateway"]["reconciled"]

    # A client retrying after the failover gets the same order back, and the gateway saw it once.
    status, again = _order(api, "scaleout-1")
    assert status == 200 and again["id"] == placed["id"] and again["status"] == "filled"
    assert _sent(sim_gateway, "scaleout-1") == 1

    # The survivor now trades on its own connection.
    status, second = _order(api, "scaleout-2", quantity="2")
    assert status == 201, second
    wait_for(lambda: _status(api, second["id"]) == "filled", message="filled after takeover")
    assert _sent(sim_gateway, "scaleout-2") == 1


@pytest.mark.parametrize("lease_ttl_s", [300])  # a lease that cannot expire while this test waits
def test_an_owner_that_stops_cleanly_hands_over_without_waiting_for_expiry(cluster):
    owner, follower = cluster.owner_and_follower()
    owner.stop()  # SIGTERM: the owner disconnects from IB, then releases the lease
    # The lease would only expire after 300 s: a handover within the wait means it was released.
    wait_for(lambda: lease_holder_pid(cluster.env) == follower.pid, timeout=60, interval=0.2, message="handover")
    wait_for(lambda: _ready(cluster.api(follower)), timeout=30, interval=0.2, message="connected and reconciled")


def test_a_halt_through_the_follower_shows_the_owners_sweep_in_both_processes(cluster, sim_gateway):
    from decimal import Decimal

    owner, follower = cluster.owner_and_follower()
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    api = cluster.api(follower)
    body = {"client_order_id": "resting-1", "symbol": "AAPL", "action": "BUY", "quantity": "1"}
    status, placed = api.post("/api/v1/orders/", body | {"order_type": "LMT", "limit_price": "185.00"})
    assert status == 201, placed
    wait_for(lambda: _status(api, placed["id"]) == "submitted", message="resting at the broker")

    status, _ = api.post("/api/v1/trading/halt/", {"reason": "drill"})
    assert status == 200
    wait_for(lambda: _status(api, placed["id"]) == "cancelled", message="cancelled by the halt")
    # The sweep runs only in the owner; each process's health reports what it saw.
    for process in (owner, follower):
        process_api = cluster.api(process)
        wait_for(
            # `halt` is null until this process's health has seen the halt (its probe may be a moment old).
            lambda process_api=process_api: (
                (process_api.get("/api/v1/health/")[1]["halt"] or {}).get("state") == "done"
            ),
            timeout=20,
            message="the halt's sweep confirmed nothing is working",
        )
        health = process_api.get("/api/v1/health/")[1]
        assert health["trading_halted"] is True
        assert health["halt"]["working_orders"] == 0 and health["halt"]["checked_at"] is not None
    assert [o.status for o in sim_gateway.orders() if o.order_ref == "resting-1"] == ["Cancelled"]
