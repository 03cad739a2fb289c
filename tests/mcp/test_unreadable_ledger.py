"""MCP over a ledger with a value rewritten into text the application cannot read: the order, fill and audit tools
answer a tool error `ledger_unreadable` naming the row (as REST does), and still serve what can be read."""

from __future__ import annotations

import pytest

from audit import events
from orders.models import OrderStatus
from tests.audit.test_ledger_seal import rewrite_around_triggers, text_stored_database
from tests.factories import FillFactory, OrderEventFactory, OrderFactory, audit_entry
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


def test_the_audit_tool_names_an_unreadable_entry_and_reads_around_it(django_db_setup, mcp_sim):
    """As REST's audit list: an entry whose time cannot be read is named (409 ledger_unreadable), not an
    internal error; a filter that leaves it out still answers."""
    text_stored_database()
    order = OrderFactory(client_order_id="audited-1")
    tampered = audit_entry(target_type="order", target_id=str(order.pk))
    intact = audit_entry(event=events.FILL_RECORDED, target_type="fill", target_id="0001.01")
    rewrite_around_triggers("audit_auditentry", tampered.seq, "created_at", "garbage", pk_column="seq")
    with stdio_mcp(mcp_env(mcp_sim, client_id=68)) as client:
        for arguments in ({}, {"order_id": str(order.pk)}):
            result = client.call("list_audit_entries", arguments)
            assert result.is_error, arguments
            error = payload(result)["error"]
            assert error["code"] == "ledger_unreadable", (arguments, error)
            assert (error["details"]["table"], error["details"]["pk"]) == ("audit_auditentry", str(tampered.seq))
            assert "manage.py audit_verify" in error["message"]
        page = client.json("list_audit_entries", {"event": events.FILL_RECORDED})
        assert [entry["seq"] for entry in page["results"]] == [intact.seq]


def test_an_id_rewritten_with_a_fraction_is_named_not_answered_against_the_tools_schema(django_db_setup, mcp_sim):
    """SQLite keeps 1.5 written into an integer column and reads it back as a number the tools' output schema
    refuses (the client threw the whole answer away); or `int()` made it another id. The row is named instead."""
    text_stored_database()
    order = OrderFactory(client_order_id="fraction-1")
    event = OrderEventFactory(order=order, status=OrderStatus.SUBMITTED, broker_order_id=7)
    OrderFactory(client_order_id="intact-1", symbol="MSFT")
    rewrite_around_triggers("orders_orderevent", event.pk, "broker_order_id", 1.5)
    with stdio_mcp(mcp_env(mcp_sim, client_id=69)) as client:
        for tool, arguments in (("get_order", {"order_id": str(order.pk)}), ("list_orders", {})):
            result = client.call(tool, arguments)
            assert result.is_error, tool
            error = payload(result)["error"]
            assert error["code"] == "ledger_unreadable", (tool, error)
            assert (error["details"]["table"], error["details"]["pk"]) == ("orders_orderevent", str(event.pk))
            assert "1.5" in error["message"]
        assert client.json("list_orders", {"symbol": "MSFT"})["count"] == 1
