"""MCP over a ledger with a value rewritten into text the application cannot read: the order and fill tools
answer a tool error `ledger_unreadable` naming the row (as REST does), and still serve what can be read."""

from __future__ import annotations

import pytest

from tests.audit.test_ledger_seal import rewrite_around_triggers, text_stored_database
from tests.factories import FillFactory, OrderFactory
from tests.mcp.conftest import mcp_env, payload, stdio_mcp

pytestmark = pytest.mark.django_db(transaction=True)


def test_order_and_fill_tools_name_an_unreadable_row(django_db_setup, mcp_sim):
    text_stored_database()
    tampered = FillFactory(order=OrderFactory(client_order_id="tampered-1"))
    intact = FillFactory(order=OrderFactory(client_order_id="intact-1", symbol="MSFT"), symbol="MSFT")
    rewrite_around_triggers("orders_fill", tampered.pk, "price", "abc")
    with stdio_mcp(mcp_env(mcp_sim, client_id=67)) as client:
        for tool, arguments in (
            ("list_orders", {}),
            ("list_fills", {}),
            ("get_order", {"order_id": str(tampered.order_id)}),
        ):
            result = client.call(tool, arguments)
            assert result.is_error, tool
            error = payload(result)["error"]
            assert error["code"] == "ledger_unreadable", (tool, error)
            assert (error["details"]["table"], error["details"]["pk"]) == ("orders_fill", str(tampered.pk))
            assert "manage.py audit_verify" in error["message"]
        assert client.json("get_order", {"order_id": str(intact.order_id)})["fills"][0]["price"] == "189.42"
        assert client.json("list_fills", {"symbol": "MSFT"})["count"] == 1
