"""Through a real server (a subprocess with its own IB runtime on the test's simulated gateway): daphne, and
the production server (`python -m ibkrgw.serve`, uvicorn) serving HTTP and websockets on one port."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator

from orders import publish
from tests.conftest import subprocess_database_url
from tests.ws import client as wsclient
from tests.ws.conftest import ORIGIN, TIMEOUT, free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _http(port: int, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    status, data = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, data


ASGI_APP = "ibkrgw.asgi:application"
SERVERS = {
    "daphne": lambda port: [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
    "production": lambda port: [sys.executable, "-m", "ibkrgw.serve", "--host", "127.0.0.1", "--port", str(port)],
}


def _start_daphne(
    sim_port: int, key: str, *, channel_layer_url: str = "", server: str = "daphne"
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("IBKRGW_NO_BROKER", "CHANNEL_LAYER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="ibkrgw.settings",
        DATABASE_URL=subprocess_database_url(),
        IB_GATEWAY=f"127.0.0.1:{sim_port}",
        IB_CLIENT_ID="7",
        IB_THROTTLE="false",
        ORDERS_ENABLED="true",
        TRADING_HOURS="always",
        LOG_LEVEL="WARNING",
    )
    if channel_layer_url:
        env["CHANNEL_LAYER_URL"] = channel_layer_url
    proc = subprocess.Popen(
        SERVERS[server](port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{server} did not start")
        try:
            if _http(port, key, "GET", "/api/v1/health/")[1].get("reconciliation") == "done":
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)


@pytest.fixture
def trade_key(transactional_db) -> str:
    from ibkrgw.models import ScopedAPIKey

    return ScopedAPIKey.objects.create_key(name="ws-daphne", scope="trade")[1]


@pytest.fixture(params=sorted(SERVERS))
def daphne(sim_gateway, trade_key, request):
    proc, port = _start_daphne(sim_gateway.port, trade_key, server=request.param)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def daphne_on_redis(sim_gateway, trade_key, redis_layer):
    proc, port = _start_daphne(sim_gateway.port, trade_key, channel_layer_url=redis_layer)
    yield port
    proc.terminate()
    proc.wait(10)


async def test_real_sockets_through_daphne(daphne, sim_gateway, trade_key):
    port = daphne
    sim_gateway.pause_market()

    # Unauthenticated: the handshake completes, an error frame says why, then close code 4401.
    anonymous = await wsclient.connect(port, "/ws/quotes/")
    assert (await anonymous.receive())["code"] == "not_authenticated"
    assert await anonymous.close_code() == 4401

    stalled = await wsclient.connect(port, "/ws/quotes/", key=trade_key)
    fast = await wsclient.connect(port, "/ws/quotes/", key=trade_key)
    for client in (stalled, fast):
        await client.send({"action": "subscribe", "symbols": ["AAPL"]})
        ack = await client.receive_until(lambda f: f["type"] == "subscribed")
        assert ack["contracts"][0]["con_id"] == 265598
    await asyncio.to_thread(sim_gateway.set_price, "AAPL", Decimal("190.05"))
    for client in (stalled, fast):
        quote = await client.receive_until(lambda f: f["type"] == "quote" and f["last"] == "190.05")
        assert quote["stale"] is False and quote["symbol"] == "AAPL"

    # One client stops reading; the other still gets every tick.
    stalled.stop_reading()
    for cents in range(10, 40):
        price = Decimal(f"190.{cents}")
        await asyncio.to_thread(sim_gateway.set_price, "AAPL", price)
        await fast.receive_until(lambda f, p=price: f["type"] == "quote" and Decimal(f["last"]) == p)

    # A bad message: error frame, socket open.
    await fast.send({"action": "subscribe", "symbols": "AAPL"})
    error = await fast.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "invalid_request"
    await fast.send({"action": "ping"})
    await fast.receive_until(lambda f: f["type"] == "pong")
    for client in (stalled, fast):
        client.close()
    # HTTP on the same port, answered by the fast read lane once the key is verified.
    for _ in range(2):
        status, quote = await asyncio.to_thread(_http, port, trade_key, "GET", "/api/v1/quotes/AAPL/")
        assert status == 200 and quote["con_id"] == 265598


async def test_order_events_reach_another_process_through_redis(
    daphne_on_redis, sim_gateway, trade_key, ws_key, monkeypatch
):
    """An order placed through daphne (another process) reaches a client of this process: the commit is
    announced on the Redis group, this process's hub reads the shared ledger."""
    from ibkrgw.asgi import application

    monkeypatch.setattr(publish, "LEDGER_POLL_S", 3600.0)  # only the Redis announcement may deliver it
    sim_gateway.pause_market()
    ws = WebsocketCommunicator(
        application, "/ws/orders/", headers=[ORIGIN, (b"authorization", f"Api-Key {ws_key}".encode())]
    )
    assert (await ws.connect(timeout=TIMEOUT))[0]

    body = {"client_order_id": "via-daphne", "symbol": "AAPL", "action": "BUY", "quantity": "5", "order_type": "MKT"}
    status, order = await asyncio.to_thread(_http, daphne_on_redis, trade_key, "POST", "/api/v1/orders/", body)
    assert status == 201, order
    frame = await ws.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "order" and frame["order"]["id"] == order["id"]
    await ws.disconnect()
