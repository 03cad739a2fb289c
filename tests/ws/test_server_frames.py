"""What the web server itself answers to a frame the application never sees, the same under the production
server (`python -m ibkrgw.serve`, uvicorn), `daphne` and `manage.py runserver`: a text frame that is not
UTF-8 closes 1007 and leaves at most one short log line, a message over the server's limit closes 1009, and
one between the application's limit and the server's gets the error frame."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ibkrgw.servers import WS_MAX_MESSAGE_BYTES
from tests.conftest import web_server_env
from tests.ws import client as wsclient
from tests.ws.conftest import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ASGI_APP = "ibkrgw.asgi:application"
SERVERS = {
    "production": lambda port: [sys.executable, "-m", "ibkrgw.serve", "--host", "127.0.0.1", "--port", str(port)],
    "daphne": lambda port: [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
    "runserver": lambda port: [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
}


class Server:
    def __init__(self, name: str, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.name, self.port, self.proc, self.log = name, port, proc, log

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(params=list(SERVERS))
def server(request, tmp_path, transactional_db):
    port = free_port()
    env = web_server_env(LOG_LEVEL="WARNING", LOG_FORMAT="text")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(SERVERS[request.param](port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    _wait_listening(proc, port, log)
    yield Server(request.param, port, proc, log)
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def key(transactional_db) -> str:
    from ibkrgw.models import ScopedAPIKey

    return ScopedAPIKey.objects.create_key(name="ws-server-frames", scope="read")[1]


async def _serves_others_with_no_error_logged(server: Server, key: str) -> str:
    """A client that comes afterwards is served normally, and nothing so far was logged as an error: the log."""
    ws = await wsclient.connect(server.port, "/ws/quotes/", key=key)
    await ws.send({"action": "ping"})
    assert (await ws.receive())["type"] == "pong"
    ws.close()
    logs = server.logs()
    assert "Traceback" not in logs, logs
    assert " ERROR " not in logs, logs
    return logs


async def test_text_frames_that_are_not_utf8_close_1007_with_at_most_one_log_line(server, key):
    for _ in range(8):
        ws = await wsclient.connect(server.port, "/ws/quotes/", key=key)
        await ws.send({"action": "ping"})
        assert (await ws.receive())["type"] == "pong"
        await ws.send_raw(wsclient.TEXT, b'{"action": "ping", "id": "\xff\xfe"}')
        assert await ws.close_code() == 1007
        ws.close()

    logs = await _serves_others_with_no_error_logged(server, key)
    lines = [line for line in logs.splitlines() if "UTF-8" in line]
    assert len(lines) <= 1, logs
    assert all(" WARNING " in line for line in lines), lines


async def test_messages_over_the_limits_get_the_same_answer_from_every_server(server, key):
    ws = await wsclient.connect(server.port, "/ws/quotes/", key=key)
    # Over the application's limit, within the server's: the error frame, and the socket stays open.
    big = json.dumps({"action": "ping", "id": "x" * (2 * 1024 * 1024)}).encode()
    await ws.send_raw(wsclient.TEXT, big)
    error = await ws.receive()
    assert error["type"] == "error" and error["code"] == "request_too_large", error
    await ws.send({"action": "ping", "id": 1})
    assert await ws.receive() == {"type": "pong", "id": 1}

    # Over the server's limit: refused as soon as the frame's header says so, close 1009.
    await ws.send_raw(wsclient.TEXT, b"x" * 65536, length=WS_MAX_MESSAGE_BYTES + 1)
    assert await ws.close_code() == 1009
    ws.close()
    assert "Traceback" not in server.logs()


def _wait_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start:\n{log.read_text(errors='replace')}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)


def _websocket_clients(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    found = [line for line in text.splitlines() if line.startswith('ibkrgw_websocket_clients{stream="quotes"}')]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_a_client_gone_while_its_message_is_answered_is_released_without_an_error(server, key):
    """Subscribing and going away at once (a crash, a closed laptop): the answer finds no client. The server must
    let go of it as of any client that leaves (its stream count, its tasks), with no ERROR line."""
    for _ in range(10):
        ws = await wsclient.connect(server.port, "/ws/quotes/", key=key)
        await ws.send({"action": "subscribe", "symbols": ["AAPL"]})
        ws.writer.transport.abort()  # no close frame: the TCP connection is simply gone
        await asyncio.sleep(0)  # (the socket itself is closed on the loop's next turn)
    deadline = time.monotonic() + 10
    while _websocket_clients(server.port) != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert _websocket_clients(server.port) == 0
    await _serves_others_with_no_error_logged(server, key)
