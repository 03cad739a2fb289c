"""`manage.py mcp` over stdio, driven by the MCP SDK's client: tools, quotes, gates, errors, audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from audit.models import AuditEntry
from brokers.sim.server import SimGateway
from orders.models import Order
from tests.conftest import wait_for
from tests.mcp.conftest import McpClient, mcp_env, payload, stdio_mcp

pytestmark = pytest.mark.django_db(transaction=True)

READ_TOOLS = {
    "get_health",
    "resolve_contract",
    "get_quote",
    "get_bars",
    "get_account_summary",
    "list_positions",
    "get_pnl",
    "preview_order",
    "get_order",
    "list_orders",
    "list_fills",
    "get_option_chain",
    "get_market_hours",
    "list_audit_entries",
}
TRADE_TOOLS = {"place_order", "modify_order", "cancel_order"}


def _order(**overrides: str) -> dict[str, str]:
    return {"symbol": "AAPL", "action": "BUY", "quantity": "10", "order_type": "MKT", "tif": "DAY", **overrides}


@pytest.fixture(scope="module")
def mcp(django_db_setup, mcp_sim: SimGateway) -> Iterator[McpClient]:
    """One subprocess for the module, default settings (orders disabled)."""
    with stdio_mcp(mcp_env(mcp_sim, client_id=21)) as client:
        client.wait_ready()
        yield client


def test_lists_the_rest_mirrors_with_their_annotations(mcp):
    tools = {tool.name: tool for tool in mcp.tools()}
    assert set(tools) == READ_TOOLS | TRADE_TOOLS
    for name in READ_TOOLS:
        assert tools[name].annotations.read_only_hint is True, name
    for name in TRADE_TOOLS:
        assert tools[name].annotations.read_only_hint is False, name
        assert tools[name].annotations.destructive_hint is True, name
    assert tools["cancel_order"].annotations.idempotent_hint is True
    assert tools["modify_order"].annotations.idempotent_hint is True
    # Without a client_order_id a second call places a second order.
    assert tools["place_order"].annotations.idempotent_hint is False
    assert all(tool.input_schema["additionalProperties"] is False for tool in tools.values())
    assert {"symbol", "action", "quantity", "order_type", "client_order_id"} <= set(
        tools["place_order"].input_schema["properties"]
    )


def test_get_quote_comes_from_the_simulated_gateway(mcp, mcp_sim):
    result = mcp.call("get_quote", {"symbol": "AAPL"})
    assert not result.is_error, result.content[0].text
    quote = payload(result)
    assert quote["symbol"] == "AAPL"
    assert quote["con_id"] == mcp_sim.con_id("AAPL")
    assert Decimal(quote["bid"]) <= Decimal(quote["ask"])
    assert quote["contract"]["con_id"] == quote["con_id"]
    assert result.structured_content == quote


def test_list_shaped_answers_carry_the_rest_items(mcp, api_client, ib_runtime):
    # structuredContent must be an object: the REST list travels under "contracts", with its count.
    rest = api_client.get("/api/v1/contracts/?symbol=MSFT").json()
    assert mcp.json("resolve_contract", {"symbol": "MSFT"}) == {"count": len(rest), "contracts": rest}


def test_place_order_under_default_settings_is_simulated_and_sends_nothing(mcp, mcp_sim):
    result = mcp.call("place_order", _order(client_order_id="mcp-sim-1"))
    assert not result.is_error, result.content[0].text
    order = payload(result)
    assert order["status"] == "simulated"
    assert order["preview"] is not None
    assert [o for o in mcp_sim.received_orders() if not o.what_if] == []

    correlation_id = result.meta["correlation_id"]
    assert order["correlation_id"] == correlation_id
    entry = AuditEntry.objects.get(event="order.simulated", target_id=order["id"])
    assert (entry.actor_kind, entry.actor_label, entry.source) == ("mcp", "mcp:stdio", "mcp")
    assert entry.correlation_id == correlation_id


def test_each_call_gets_its_own_correlation_id(mcp):
    first, second = mcp.call("get_health"), mcp.call("get_health")
    assert first.meta["correlation_id"] != second.meta["correlation_id"]


def test_unknown_argument_is_rejected_and_nothing_is_recorded(mcp):
    # The SDK alone would drop `limit_prize` silently and place a market-priced order.
    result = mcp.call("place_order", _order(order_type="LMT", limit_prize="1.00"))
    assert result.is_error
    error = payload(result)["error"]
    assert error["code"] == "invalid_request"
    assert "limit_prize" in error["details"]["fields"]
    assert result.structured_content == payload(result)
    assert not Order.objects.exists()

    error = payload(mcp.call("get_quote", {"symbol": "AAPL", "stream_": True}))["error"]
    assert error["code"] == "invalid_request"
    assert "stream_" in error["details"]["fields"]


def test_invalid_value_gives_the_same_error_as_rest(mcp, api_client):
    body = _order(quantity="-5", tif="SOMETIMES")
    result = mcp.call("place_order", body)
    assert result.is_error
    rest = api_client.post("/api/v1/orders/", body, format="json")
    assert rest.status_code == 400
    assert payload(result) == rest.json()
    assert payload(result)["error"]["code"] == "invalid_request"
    assert {"quantity", "tif"} <= set(payload(result)["error"]["details"]["fields"])


def test_unknown_order_is_not_found_as_in_rest(mcp, api_client):
    order_id = str(uuid.uuid4())
    error = payload(mcp.call("get_order", {"order_id": order_id}))["error"]
    assert error["code"] == api_client.get(f"/api/v1/orders/{order_id}/").json()["error"]["code"] == "order_not_found"
    assert payload(mcp.call("cancel_order", {"order_id": order_id}))["error"]["code"] == "order_not_found"


def test_orders_and_fills_are_listed_in_the_rest_page_shape(mcp):
    placed = mcp.json("place_order", _order(client_order_id="mcp-list-1"))
    page = mcp.json("list_orders", {"status": "simulated", "limit": 5})
    assert page["count"] == 1
    assert [o["id"] for o in page["results"]] == [placed["id"]]
    assert mcp.json("get_order", {"order_id": placed["id"]})["client_order_id"] == "mcp-list-1"
    assert mcp.json("list_fills", {"order_id": placed["id"]})["results"] == []


def test_trading_status_resource_shows_the_safety_settings(mcp):
    status = mcp.resource("ibkr://trading-status")
    assert status["trading_mode"] == "paper"
    assert status["orders_enabled"] is False
    assert status["trading_halted"] is False
    assert status["mcp_can_change_these"] is False
    assert Decimal(status["risk_limits"]["max_order_quantity"]) > 0


def test_with_orders_enabled_the_order_fills_and_is_visible_through_rest(sim_gateway, api_client):
    sim_gateway.pause_market()
    with stdio_mcp(mcp_env(sim_gateway, client_id=22, ORDERS_ENABLED="true")) as armed:
        armed.wait_ready()
        result = armed.call("place_order", _order(client_order_id="mcp-armed-1"))
        assert not result.is_error, result.content[0].text
        order_id = payload(result)["id"]
        wait_for(lambda: api_client.get(f"/api/v1/orders/{order_id}/").json()["status"] == "filled", message="filled")
        order = api_client.get(f"/api/v1/orders/{order_id}/").json()
        assert Decimal(order["filled_quantity"]) == 10
        assert (order["actor_kind"], order["source"]) == ("mcp", "mcp")
        assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == ["mcp-armed-1"]
        # Let the subprocess record the fill before it exits.
        wait_for(lambda: armed.json("get_order", {"order_id": order_id})["fills"], message="fill recorded")

    entries = AuditEntry.objects.filter(correlation_id=result.meta["correlation_id"])
    assert {"order.submitted", "order.sent"} <= set(entries.values_list("event", flat=True))
    assert set(entries.values_list("actor_kind", "source")) == {("mcp", "mcp")}
