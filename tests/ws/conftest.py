"""Websocket test helpers: real connections to `ibkrgw.asgi.application` through Channels' communicator."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time

import pytest
from channels.testing import WebsocketCommunicator

from ibkrgw.layers import redis_channel_layer

# The test's `ib_runtime` fixture owns the broker runtime; importing ibkrgw.asgi must not start another.
os.environ["IBKRGW_NO_BROKER"] = "1"

ORIGIN = (b"origin", b"http://localhost")
TIMEOUT = 10  # seconds for any one frame: generous, so the suite does not depend on machine speed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def communicator(path: str, *, key: str | None = None, headers=(), application=None) -> WebsocketCommunicator:
    from ibkrgw.asgi import application as asgi_application

    all_headers = [ORIGIN, *headers]
    if key:
        all_headers.append((b"authorization", f"Api-Key {key}".encode()))
    return WebsocketCommunicator(application or asgi_application, path, headers=all_headers)


async def connected(path: str, key: str, **kwargs) -> WebsocketCommunicator:
    ws = communicator(path, key=key, **kwargs)
    ok, _ = await ws.connect(timeout=TIMEOUT)
    assert ok
    return ws


async def receive_until(ws: WebsocketCommunicator, predicate, timeout: float = TIMEOUT) -> tuple[dict, list[dict]]:
    """Frames until one matches `predicate`; returns (that frame, every frame received before it)."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no matching frame within {timeout}s; got {seen[-5:]}")
        frame = await ws.receive_json_from(timeout=remaining)
        if predicate(frame):
            return frame, seen
        seen.append(frame)


async def sent_before_end(ws: WebsocketCommunicator, timeout: float = TIMEOUT) -> dict:
    """The next message the consumer sent, also once it has ended itself (a server-side close): the
    communicator's own receive raises the application's end first, even with messages still queued."""
    async with asyncio.timeout(timeout):
        return await ws.output_queue.get()


async def eventually(predicate, timeout: float = TIMEOUT, message: str = "condition"):
    """Poll a cheap, thread-safe predicate from async code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {message}")


def sim_subscriptions(sim, con_id: int) -> int:
    """How many market-data subscriptions the simulated gateway holds for `con_id` (its own view)."""
    return sum(1 for s in list(sim.sessions) for inst in list(s.mkt.values()) if inst.con_id == con_id)


@pytest.fixture
def ws_key(transactional_db) -> str:
    from ibkrgw.models import ScopedAPIKey

    _, key = ScopedAPIKey.objects.create_key(name="ws-read", scope="read")
    return key


@pytest.fixture(scope="session")
def redis_url():
    """A throwaway redis-server on a free port (CI installs the Debian package `redis-server`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): Redis channel-layer tests skipped")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_layer(settings, redis_url):
    """Switch this test to channels-redis (Channels drops its cached layers when the setting changes)."""
    settings.CHANNEL_LAYER_URL = redis_url
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(redis_url)}
    return redis_url
