"""MCP tool arguments are held to the REST limits: a hostile argument is a tool error in the REST error
shape (never a crash), and nothing reaches the broker. Driven by the MCP SDK's own client, in process."""

from __future__ import annotations

import json
import threading
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import httpx2
import pytest
from asgiref.sync import sync_to_async
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from ibkrgw import mcp_server
from ibkrgw.mcp_server import build_server
from ibkrgw.mcp_transport import http_app
from ibkrgw.models import ScopedAPIKey
from orders.models import Order
from tests.hostile.conftest import assert_error_shape

pytestmark = pytest.mark.django_db(transaction=True)


def nested(levels: int):
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


ORDER = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT", "client_order_id": "mcp-h"}

CASES = [
    ("place_order", {**ORDER, "action": "\ud800"}, "invalid_request"),
    ("place_order", {**ORDER, "quantity": "٣"}, "invalid_request"),
    ("place_order", {**ORDER, "quantity": "４"}, "invalid_request"),
    ("place_order", {**ORDER, "quantity": "1_0"}, "invalid_request"),
    ("place_order", {**ORDER, "symbol": "AAPL\x00STK\x00SMART"}, "invalid_request"),
    ("place_order", {**ORDER, "quantity": nested(100)}, "invalid_request"),
    ("preview_order", {**ORDER, "order_type": "\udfff"}, "invalid_request"),
    ("get_quote", {"symbol": "AAPL\x00STK"}, "invalid_request"),
    ("get_quote", {"symbol": "ＡＡＰＬ"}, "invalid_request"),
    ("get_bars", {"symbol": "AAPL", "bar_size": "1 secs", "duration": "365 D"}, "historical_limit"),
    ("resolve_contract", {"symbol": "AAPL", "exchange": "SMART\x1b"}, "invalid_request"),
    ("resolve_contract", {"symbol": "AAPL", "con_id": "1_0"}, "invalid_request"),
    ("get_account_summary", {"account": "DU1\x00"}, "invalid_request"),
    ("list_orders", {"symbol": ["x"] * 3}, "invalid_request"),
    ("cancel_order", {"order_id": "\x00" * 40}, "invalid_request"),
]


@pytest.mark.parametrize(("tool", "arguments", "code"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
async def test_hostile_tool_arguments_are_tool_errors_in_the_rest_shape(
    broker_tap, orders_enabled, tool, arguments, code
):
    async with Client(build_server(transport="stdio")) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    error = assert_error_shape(json.loads(result.content[0].text), code)
    if code == "historical_limit":
        assert error["details"]["max_duration"] == "1800 S"
    broker_tap.assert_untouched()


async def test_deeply_nested_arguments_never_crash_the_server(broker_tap, orders_enabled):
    # 200 levels: about as deep as the SDK's own client will serialize.
    async with Client(build_server(transport="stdio")) as client:
        try:
            result = await client.call_tool("place_order", {**ORDER, "quantity": nested(200)})
        except MCPError:
            pass  # refused by the SDK's own argument parsing: also fine, and nothing ran
        else:
            assert result.is_error
            assert_error_shape(json.loads(result.content[0].text), "invalid_request")
        # The server still answers.
        assert not (await client.call_tool("get_health", {})).is_error
    broker_tap.assert_untouched()


async def test_an_oversized_http_body_is_413_before_any_mcp_message_is_read(transactional_db):
    app = http_app(build_server(transport="http"), host="127.0.0.1")
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8001") as http:
        response = await http.post(
            "/mcp", content=b" " * (10 * 1024 * 1024), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert_error_shape(response.json(), "request_too_large")


async def _chunks(size: int, chunk: int = 64 * 1024):
    sent = 0
    while sent < size:
        yield b" " * min(chunk, size - sent)
        sent += chunk


async def test_an_oversized_chunked_http_body_without_a_length_is_413(transactional_db):
    app = http_app(build_server(transport="http"), host="127.0.0.1")
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8001") as http:
        response = await http.post(
            "/mcp", content=_chunks(10 * 1024 * 1024), headers={"content-type": "application/json"}
        )
    assert "content-length" not in response.request.headers  # sent chunked: no size declared
    assert response.status_code == 413
    assert_error_shape(response.json(), "request_too_large")


@pytest.mark.parametrize(
    ("read_only", "tool", "code"),
    [
        (False, "no_such_tool", "not_found"),
        (False, "x" * 5000, "not_found"),
        (True, "place_order", "permission_denied"),
    ],
    ids=["unknown", "huge-name", "read-only"],
)
async def test_a_tool_not_offered_is_a_tool_error_in_the_rest_shape(read_only, tool, code):
    async with Client(build_server(transport="stdio", read_only=read_only)) as client:
        result = await client.call_tool(tool, {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"})
    assert result.is_error
    error = assert_error_shape(json.loads(result.content[0].text), code)
    assert result.structured_content == {"error": error}
    assert len(error["details"]["tool"]) <= 64
    assert not await sync_to_async(Order.objects.exists)()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


@asynccontextmanager
async def _http_session(server, secret: str):
    """An initialized MCP session over HTTP: (client, the session's headers)."""
    headers = {"Authorization": f"Api-Key {secret}", "Accept": "application/json, text/event-stream"}
    transport = httpx2.ASGITransport(app=http_app(server, host="127.0.0.1"))
    async with (
        server.session_manager.run(),
        httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765", headers=headers, timeout=30) as http,
    ):
        opened = await http.post("/mcp", json=INITIALIZE)
        headers = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
        await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        yield http, headers


async def test_a_request_id_in_flight_cannot_be_used_again_in_its_session(monkeypatch, transactional_db):
    """The SDK routes answers by request id: a second request with the id of one in flight took over its answer
    stream, and neither POST was ever answered (while both calls ran). Now the second is refused with 400, the
    first is answered, and the id is free again once it has been."""
    _, secret = await sync_to_async(ScopedAPIKey.objects.create_key)(name="ids", scope="read")
    server = build_server(transport="http")
    entered, release = threading.Event(), threading.Event()
    run_tool = mcp_server.run_tool

    def held(*args, **kwargs):
        entered.set()
        release.wait(20)
        return run_tool(*args, **kwargs)

    monkeypatch.setattr(mcp_server, "run_tool", held)
    health = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "get_health", "arguments": {}}}
    async with _http_session(server, secret) as (http, headers):
        answers: dict[str, httpx2.Response] = {}

        async def first() -> None:
            answers["first"] = await http.post("/mcp", json=health, headers=headers)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.to_thread.run_sync(entered.wait, 20)
            for request_id in (7, "7"):  # the SDK tells ids apart by their text
                with anyio.fail_after(10):  # unfixed, this POST is never answered
                    again = await http.post("/mcp", json={**health, "id": request_id}, headers=headers)
                assert again.status_code == 400
                assert again.json()["id"] == request_id
                assert again.json()["error"]["code"] == -32600
            for request_id in (True, 1.5, None):  # taken for a notification: dropped, never answered
                odd = await http.post("/mcp", json={**health, "id": request_id}, headers=headers)
                assert odd.status_code == 400
                assert odd.json()["error"]["code"] == -32600
            release.set()
        assert answers["first"].status_code == 200
        assert '"id":7,"result"' in answers["first"].text
        reused = await http.post("/mcp", json=health, headers=headers)
        assert reused.status_code == 200
        assert '"id":7,"result"' in reused.text


async def test_a_message_naming_a_key_twice_is_refused_before_anything_runs(broker_tap, orders_enabled):
    """Parsers disagree on which of two values counts (the SDK's takes the last): refused, as at every door."""
    _, secret = await sync_to_async(ScopedAPIKey.objects.create_key)(name="twice", scope="trade")
    call = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "place_order", "arguments": ORDER}}
    twice = json.dumps(call)[:-3] + ', "quantity": "1000"}}}'
    async with _http_session(build_server(transport="http"), secret) as (http, headers):
        refused = await http.post("/mcp", content=twice, headers={**headers, "Content-Type": "application/json"})
    assert refused.status_code == 400
    assert refused.json()["id"] == 8
    assert refused.json()["error"]["code"] == -32600
    assert not await sync_to_async(Order.objects.exists)()
    broker_tap.assert_untouched()
