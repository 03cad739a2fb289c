"""The stdio process itself: stdout carries nothing but protocol, and SIGTERM ends it promptly and cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import wait_for
from tests.mcp.conftest import ROOT, mcp_env

pytestmark = pytest.mark.django_db(transaction=True)

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stdio_logs_to_stderr_and_stops_on_signal_while_waiting_for_input(sim_gateway, signum):
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mcp"],
        cwd=ROOT,
        env=mcp_env(sim_gateway, client_id=24),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        process.stdin.write((json.dumps(INITIALIZE) + "\n").encode())
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())
        assert answer["id"] == 1
        assert answer["result"]["serverInfo"]["name"] == "ibkr-gateway"
        assert 24 in sim_gateway.connected_client_ids()

        # stdin stays open: the server is blocked waiting for the client's next message.
        process.send_signal(signum)
        assert process.wait(60) == 0  # stops by itself, while stdin is still open (60 s only guards a hang)
    finally:
        if process.poll() is None:
            process.kill()
    # Logging went to stderr only; stdout holds nothing but the one protocol message.
    assert process.stdout.read() == b""
    stderr = process.stderr.read().decode()
    assert "connected to IB" in stderr
    assert "mcp: stopped" in stderr
    wait_for(lambda: 24 not in sim_gateway.connected_client_ids(), message="IB client disconnected")
