"""The stdio process itself: stdout carries nothing but protocol, and SIGTERM ends it promptly and cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest

from orders.models import Order
from tests.conftest import wait_for
from tests.mcp.conftest import ROOT, mcp_env

pytestmark = pytest.mark.django_db(transaction=True)

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}


def _stdio_server(sim_gateway, *, client_id: int, stderr: int) -> subprocess.Popen:
    """`manage.py mcp` on stdio, as an MCP client process starts it."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "mcp"],
        cwd=ROOT,
        env=mcp_env(sim_gateway, client_id=client_id),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


def _send(process: subprocess.Popen, message: dict) -> None:
    process.stdin.write((json.dumps(message) + "\n").encode())
    process.stdin.flush()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stdio_logs_to_stderr_and_stops_on_signal_while_waiting_for_input(sim_gateway, signum):
    process = _stdio_server(sim_gateway, client_id=24, stderr=subprocess.PIPE)
    try:
        _send(process, INITIALIZE)
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


def test_stdio_answers_the_calls_in_flight_when_the_client_closes_stdin(sim_gateway):
    """A client that sends its last calls and closes stdin (a pipe, or the shutdown the protocol prescribes) gets
    their answers before the process ends: the order it placed is named in the answer, not a "Connection closed"
    error for an order that was recorded all the same."""
    process = _stdio_server(sim_gateway, client_id=25, stderr=subprocess.DEVNULL)

    def send(message: dict) -> None:
        _send(process, message)

    def call(request_id: int, tool: str, arguments: dict) -> dict:
        params = {"name": tool, "arguments": arguments}
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}

    try:
        send(INITIALIZE)
        assert json.loads(process.stdout.readline())["id"] == 1
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})

        def reconciled() -> bool:
            send(call(2, "get_health", {}))
            return json.loads(process.stdout.readline())["result"]["structuredContent"]["gateway"]["reconciled"]

        wait_for(reconciled, timeout=20, message="mcp reconciled")
        order = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT", "client_order_id": "eof-1"}
        send(call(3, "place_order", order))
        send(call(4, "get_health", {}))  # answered concurrently with the order
        process.stdin.close()
        answers = {answer["id"]: answer for answer in map(json.loads, process.stdout.read().splitlines())}
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert set(answers) == {3, 4}
    assert "error" not in answers[3], answers[3]
    placed = answers[3]["result"]["structuredContent"]
    assert placed["status"] == "simulated"
    assert Order.objects.get(client_order_id="eof-1").id == uuid.UUID(placed["id"])
    assert answers[4]["result"]["structuredContent"]["gateway"]["connected"] is True


def test_stdio_answers_every_request_it_cannot_read_and_keeps_serving(sim_gateway):
    """A request the SDK cannot read (not JSON, an escaped lone surrogate, a malformed envelope), or one naming a
    key twice, is answered with a
    JSON-RPC error carrying its id where it has a usable one, instead of leaving the client waiting for ever; a
    notification it cannot read is not answered; nothing reaches the ledger or the broker, and the server goes on."""
    process = _stdio_server(sim_gateway, client_id=26, stderr=subprocess.DEVNULL)
    order = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT", "client_order_id": "lone-1"}

    def call(request_id, tool: str, arguments: dict) -> dict:
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }

    def write(line: str) -> None:
        process.stdin.write((line + "\n").encode())
        process.stdin.flush()

    try:
        _send(process, INITIALIZE)
        assert json.loads(process.stdout.readline())["id"] == 1
        _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        answers = []
        # json.dumps escapes a lone surrogate as \ud800: valid JSON text, but not valid Unicode.
        for message in (
            call(10, "place_order", {**order, "\ud800": 1}),  # in a key of the arguments
            call(11, "place_order", {**order, "symbol": "AA\udfffPL"}),  # in a value
            call("\ud800", "place_order", order),  # in the id itself: answered with a null id
            {"jsonrpc": "2.0", "id": 12, "method": 1},  # a malformed envelope
        ):
            _send(process, message)
            answers.append(json.loads(process.stdout.readline()))
        write("this is not json")
        answers.append(json.loads(process.stdout.readline()))
        # A key named twice: parsers disagree on which value counts (the SDK's would place 1000).
        write(json.dumps(call(14, "place_order", order))[:-3] + ', "quantity": "1000"}}}')
        answers.append(json.loads(process.stdout.readline()))
        _send(process, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "\ud800"}})
        _send(process, call(13, "get_health", {}))  # the next line out answers this: the notification got none
        health = json.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        if process.wait(60) != 0:
            process.kill()
    assert [answer["id"] for answer in answers] == [10, 11, None, 12, None, 14]
    # Not valid Unicode is a parse error, as the HTTP transport answers it; a malformed envelope an invalid request.
    assert [answer["error"]["code"] for answer in answers] == [-32700, -32700, -32700, -32600, -32700, -32600]
    assert "twice" in answers[-1]["error"]["message"]
    assert all("result" not in answer for answer in answers)
    assert health["id"] == 13 and health["result"]["structuredContent"]["gateway"]["connected"] is True
    assert not Order.objects.exists()
