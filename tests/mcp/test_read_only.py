"""Read-only mode: the tools that place, change or cancel orders are not there at all."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from orders.models import Order
from tests.mcp.conftest import mcp_env, payload, stdio_mcp

pytestmark = pytest.mark.django_db(transaction=True)

TRADE_TOOLS = {"place_order", "modify_order", "cancel_order"}


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [(("--read-only",), {}), ((), {"MCP_READ_ONLY": "true"})],
    ids=["flag", "setting"],
)
def test_read_only_lists_no_write_tool_and_cannot_place(django_db_setup, mcp_sim, args, extra_env):
    with stdio_mcp(mcp_env(mcp_sim, client_id=51, **extra_env), *args) as client:
        names = {tool.name for tool in client.tools()}
        assert not names & TRADE_TOOLS
        assert {"get_quote", "preview_order", "get_order", "list_orders"} <= names
        assert all(tool.annotations.read_only_hint for tool in client.tools())
        prompts = {p.name for p in client.portal.call(client.session.list_prompts).prompts}
        assert "place_limit_order_safely" not in prompts
        assert "check_position" in prompts
        # Not listed and not callable either.
        result = client.call("place_order", {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"})
        assert result.is_error
        assert payload(result)["error"]["code"] == "permission_denied"
        assert client.json("get_quote", {"symbol": "AAPL"})["con_id"] == mcp_sim.con_id("AAPL")
    assert not Order.objects.exists()


def test_read_only_server_audits_a_refused_trade_tool(django_db_setup, mcp_sim):
    """A trade tool the read-only server does not offer is refused, and the refusal audited as any other."""
    with stdio_mcp(mcp_env(mcp_sim, client_id=53), "--read-only") as client:
        result = client.call("cancel_order", {"order_id": "not-a-uuid"})
    assert payload(result)["error"]["code"] == "permission_denied"
    (entry,) = AuditEntry.objects.filter(event="request.refused")
    assert (entry.actor_kind, entry.actor_label, entry.source) == ("mcp", "mcp:stdio", "mcp")
    assert entry.correlation_id == result.meta["correlation_id"]
    assert (entry.data["action"], entry.data["code"]) == ("cancel_order", "permission_denied")


def test_read_tools_count_in_the_callers_read_rate(django_db_setup, mcp_sim):
    """An agent looping on reads is held to API_READ_RATE as a REST client is: over it, a `throttled` tool error
    saying when to try again, before anything is asked of the broker. Trade tools have their own limits."""
    with stdio_mcp(mcp_env(mcp_sim, client_id=55, API_READ_RATE="2/min")) as client:
        assert client.json("get_quote", {"symbol": "AAPL"})["con_id"] == mcp_sim.con_id("AAPL")
        assert client.json("get_quote", {"symbol": "MSFT"})["con_id"] == mcp_sim.con_id("MSFT")
        result = client.call("get_quote", {"symbol": "SPY"})
        assert result.is_error
        error = payload(result)["error"]
        assert error["code"] == "throttled" and error["details"]["retry_after_s"] > 0, error
