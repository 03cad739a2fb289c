"""What the web server itself answers to a frame the application never sees, under the production server
(`python -m ibkrgw.serve`, uvicorn): a text frame that is not UTF-8 closes 1007 and leaves at most one
short log line."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import subprocess_database_url
from tests.ws import client as wsclient
from tests.ws.conftest import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ASGI_APP = "ibkrgw.asgi:application"
SERVERS = {
    "production": lambda port: [sys.executable, "-m", "ibkrgw.serve", "--host", "127.0.0.1", "--port", str(port)],
}


class Server:
    def __init__(self, name: str, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.name, self.port, self.proc, self.log = name, port, proc, log

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(params=list(SERVERS))
def server(request, tmp_path, transactional_db):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CHANNEL_LAYER_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="ibkrgw.settings",
        DATABASE_URL=subprocess_database_url(),
        IBKRGW_NO_BROKER="1",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="text",
    )
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


async def test_text_frames_that_are_not_utf8_close_1007_with_at_most_one_log_line(server, key):
    for _ in range(8):
        ws = await wsclient.connect(server.port, "/ws/quotes/", key=key)
        await ws.send({"action": "ping"})
        assert (await ws.receive())["type"] == "pong"
        await ws.send_raw(wsclient.TEXT, b'{"action": "ping", "id": "\xff\xfe"}')
        assert await ws.close_code() == 1007
        ws.close()

    # A client that is served normally afterwards: the server is fine.
    ws = await wsclient.connect(server.port, "/ws/quotes/", key=key)
    await ws.send({"action": "ping"})
    assert (await ws.receive())["type"] == "pong"
    ws.close()

    logs = server.logs()
    assert "Traceback" not in logs, logs
    assert " ERROR " not in logs, logs
    lines = [line for line in logs.splitlines() if "UTF-8" in line]
    assert len(lines) <= 1, logs
    assert all(" WARNING " in line for line in lines), lines


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
