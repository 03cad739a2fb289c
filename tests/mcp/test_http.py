"""`manage.py mcp --transport http`: Origin check, API key and scopes, then the same tools as stdio."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from audit.models import AuditEntry
from brokers.sim.server import SimGateway
from ibkrgw.models import ScopedAPIKey
from orders.models import Order
from tests.mcp.conftest import http_mcp, http_process, mcp_env, payload

pytestmark = pytest.mark.django_db(transaction=True)

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}
TRADE_TOOLS = {"place_order", "modify_order", "cancel_order"}


@pytest.fixture(scope="module")
def mcp_url(django_db_setup, mcp_sim: SimGateway) -> Iterator[str]:
    with http_process({**mcp_env(mcp_sim, client_id=23), "HOME": os.environ.get("HOME", "/tmp")}) as (url, process):
        yield url
    # http_process stopped it with SIGTERM; a clean shutdown exits 0 (bounded by http_process's wait).
    assert process.returncode == 0


def _key(scope: str) -> tuple[ScopedAPIKey, str]:
    return ScopedAPIKey.objects.create_key(name=f"agent-{scope}", scope=scope)


def test_http_refuses_requests_without_a_valid_api_key(mcp_url, transactional_db):
    response = httpx2.post(mcp_url, json=INITIALIZE, headers=ACCEPT)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == "Api-Key"

    response = httpx2.post(mcp_url, json=INITIALIZE, headers={**ACCEPT, "Authorization": "Api-Key nope.nope"})
    assert response.status_code == 401

    key, _ = _key("read")
    response = httpx2.post(mcp_url, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Api-Key {key.prefix}.x"})
    assert response.status_code == 401


def test_http_refuses_a_foreign_origin_even_with_a_valid_key(mcp_url, transactional_db):
    _, secret = _key("trade")
    auth = {**ACCEPT, "Authorization": f"Api-Key {secret}"}
    response = httpx2.post(mcp_url, json=INITIALIZE, headers={**auth, "Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    # A page served from this machine (e.g. the MCP Inspector) is fine.
    assert httpx2.post(mcp_url, json=INITIALIZE, headers={**auth, "Origin": "http://localhost:6274"}).status_code == 200


def test_http_read_key_reads_but_cannot_trade(mcp_url, mcp_sim, transactional_db):
    _, secret = _key("read")
    with http_mcp(mcp_url, secret) as client:
        # The tool list follows the key's scope: a read key is not offered what it may not call.
        assert not TRADE_TOOLS & {tool.name for tool in client.tools()}
        assert "get_quote" in {tool.name for tool in client.tools()}
        assert client.json("get_quote", {"symbol": "MSFT"})["con_id"] == mcp_sim.con_id("MSFT")
        result = client.call("place_order", {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"})
    assert result.is_error
    assert payload(result)["error"]["code"] == "permission_denied"
    assert not Order.objects.exists()


def test_http_trade_key_places_a_simulated_order_in_its_own_name(mcp_url, mcp_sim, transactional_db):
    key, secret = _key("trade")
    with http_mcp(mcp_url, secret) as client:
        assert TRADE_TOOLS <= {tool.name for tool in client.tools()}
        client.wait_ready()
        result = client.call(
            "place_order",
            {"client_order_id": "mcp-http-1", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"},
        )
    assert not result.is_error, result.content[0].text
    order = payload(result)
    assert order["status"] == "simulated"
    assert order["actor_label"] == f"mcp:agent-trade ({key.prefix})"
    assert [o for o in mcp_sim.received_orders() if not o.what_if] == []
    entry = AuditEntry.objects.get(event="order.simulated", target_id=order["id"])
    assert (entry.actor_kind, entry.correlation_id) == ("mcp", result.meta["correlation_id"])


def test_http_reads_a_chunked_body_of_undeclared_size_and_refuses_one_over_the_limit(mcp_url, transactional_db):
    _, secret = _key("read")
    headers = {**ACCEPT, "Authorization": f"Api-Key {secret}", "Content-Type": "application/json"}

    def chunked(body: bytes, pieces: int = 4):
        step = max(1, len(body) // pieces)
        yield from (body[i : i + step] for i in range(0, len(body), step))

    response = httpx2.post(mcp_url, content=chunked(json.dumps(INITIALIZE).encode()), headers=headers)
    assert "content-length" not in response.request.headers  # sent chunked: no size declared
    assert response.status_code == 200, response.text
    assert "serverInfo" in response.text  # the server read the whole body and answered it

    huge = chunked(b" " * (10 * 1024 * 1024), pieces=160)
    response = httpx2.post(mcp_url, content=huge, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def _refusals(actor_label: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(event="request.refused", actor_label=actor_label).order_by("seq"))


def test_http_refused_order_requests_are_audited_as_over_rest(mcp_url, transactional_db):
    """A trade tool's refusal leaves a request.refused entry naming the MCP caller, as REST does."""
    read, read_secret = _key("read")
    with http_mcp(mcp_url, read_secret) as client:
        denied = client.call("place_order", {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"})
        assert client.call("get_order", {"order_id": str(uuid.uuid4())}).is_error  # a read: not an order request
    assert payload(denied)["error"]["code"] == "permission_denied"
    (entry,) = _refusals(f"mcp:agent-read ({read.prefix})")
    assert (entry.actor_kind, entry.source, entry.correlation_id) == ("mcp", "mcp", denied.meta["correlation_id"])
    assert (entry.data["action"], entry.data["code"]) == ("place_order", "permission_denied")
    assert json.loads(entry.data["request"])["symbol"] == "AAPL"

    trade, trade_secret = _key("trade")
    unknown = str(uuid.uuid4())
    calls = [
        ("place_order", {"symbol": "AAPL", "action": "BUY", "quantity": "abc", "order_type": "MKT"}),
        ("place_order", {"symbol": "AAPL", "action": "BUY", "qty": "1", "order_type": "MKT"}),
        ("cancel_order", {"order_id": unknown}),
        ("modify_order", {"order_id": unknown, "quantity": "2"}),
    ]
    with http_mcp(mcp_url, trade_secret) as client:
        results = [client.call(tool, arguments) for tool, arguments in calls]
    assert [payload(r)["error"]["code"] for r in results] == [
        "invalid_request",
        "invalid_request",
        "order_not_found",
        "order_not_found",
    ]
    entries = _refusals(f"mcp:agent-trade ({trade.prefix})")
    assert [(e.data["action"], e.data["code"]) for e in entries] == [
        (tool, payload(r)["error"]["code"]) for (tool, _), r in zip(calls, results, strict=True)
    ]
    assert [e.correlation_id for e in entries] == [r.meta["correlation_id"] for r in results]
    assert "qty" in entries[1].data["details"]
    assert not Order.objects.exists()


def test_http_server_writes_the_suppressed_refusal_count_when_it_stops(mcp_sim, transactional_db):
    """A flood over the audit bound, then SIGTERM: the count is written before the process ends."""
    key, secret = _key("trade")
    env = {**mcp_env(mcp_sim, client_id=29), "HOME": os.environ.get("HOME", "/tmp")}
    with http_process(env) as (url, process), http_mcp(url, secret) as client:
        for i in range(35):
            result = client.call("place_order", {"symbol": "AAPL", "action": "BUY", "quantity": f"bad-{i}"})
            assert payload(result)["error"]["code"] == "invalid_request"
        assert not AuditEntry.objects.filter(event="request.refusals_suppressed").exists()
    assert process.returncode == 0
    assert len(_refusals(f"mcp:agent-trade ({key.prefix})")) == 30
    (summary,) = AuditEntry.objects.filter(event="request.refusals_suppressed")
    assert summary.data == {"suppressed_by_actor": {f"mcp:mcp:agent-trade ({key.prefix})": 5}, "window_s": 60}


def test_http_read_key_cannot_get_the_trade_prompt(mcp_url, transactional_db):
    """prompts/get answers a read key as prompts/list does: the trade prompt does not exist for it."""
    arguments = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "limit_price": "1"}
    _, read_secret = _key("read")
    with http_mcp(mcp_url, read_secret) as client:
        with pytest.raises(MCPError) as refused:
            client.portal.call(client.session.get_prompt, "place_limit_order_safely", arguments)
        with pytest.raises(MCPError) as unknown:
            client.portal.call(client.session.get_prompt, "no_such_prompt", arguments)
        checked = client.portal.call(client.session.get_prompt, "check_position", {"symbol": "AAPL"})
    assert (refused.value.error.code, refused.value.error.message) == (
        unknown.value.error.code,
        unknown.value.error.message.replace("no_such_prompt", "place_limit_order_safely"),
    )
    assert "AAPL" in checked.messages[0].content.text
    _, trade_secret = _key("trade")
    with http_mcp(mcp_url, trade_secret) as client:
        allowed = client.portal.call(client.session.get_prompt, "place_limit_order_safely", arguments)
    assert "limit order for 1 AAPL" in allowed.messages[0].content.text


def test_http_a_stream_resumed_with_last_event_id_gets_a_clear_refusal(mcp_url, transactional_db):
    """No event history is kept: a GET with Last-Event-ID is refused with 400, not left without an answer (500)."""
    _, secret = _key("read")
    auth = {**ACCEPT, "Authorization": f"Api-Key {secret}"}
    opened = httpx2.post(mcp_url, json=INITIALIZE, headers=auth)
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    for last in ("garbage", "0", "-1", "9" * 40):
        response = httpx2.get(mcp_url, headers={**auth, **session, "Last-Event-ID": last})
        assert response.status_code == 400, (last, response.text)
        assert response.json()["error"]["code"] == "invalid_request"


def test_http_a_session_is_usable_only_with_the_api_key_that_opened_it(mcp_url, transactional_db):
    """Another key (even a trade key) that learns a session id can neither call in it, listen on it nor end it:
    it is answered as for a session that does not exist, and the owner's session goes on."""
    _, owner_secret = _key("read")
    _, other_secret = _key("trade")
    owner = {**ACCEPT, "Authorization": f"Api-Key {owner_secret}"}
    other = {**ACCEPT, "Authorization": f"Api-Key {other_secret}"}
    opened = httpx2.post(mcp_url, json=INITIALIZE, headers=owner)
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx2.post(mcp_url, json=initialized, headers={**owner, **session}).status_code == 202
    tools_list = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    assert httpx2.post(mcp_url, json=tools_list, headers={**other, **session}).status_code == 404
    with httpx2.stream("GET", mcp_url, headers={**other, **session}) as listening:
        assert listening.status_code == 404
    assert httpx2.delete(mcp_url, headers={**other, **session}).status_code == 404

    answer = httpx2.post(mcp_url, json=tools_list, headers={**owner, **session})
    assert answer.status_code == 200
    assert '"get_health"' in answer.text
    assert httpx2.delete(mcp_url, headers={**owner, **session}).status_code == 200
