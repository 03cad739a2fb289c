"""Orders through MCP with orders enabled: withdraw, idempotent cancel, modify, pushed updates, preview."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from audit.models import AuditEntry
from brokers.sim.server import SimGateway
from ibkrgw.actors import Actor
from orders.services import trading_halt
from tests.conftest import wait_for
from tests.mcp.conftest import McpClient, mcp_env, payload, stdio_mcp

pytestmark = pytest.mark.django_db(transaction=True)


def _order(**overrides: str) -> dict[str, str]:
    return {"symbol": "AAPL", "action": "BUY", "quantity": "10", "order_type": "MKT", "tif": "DAY", **overrides}


def _resting(client_order_id: str) -> dict[str, str]:
    """A buy limit 4% under the market (inside the 5% collar): it rests until the price comes down."""
    return _order(client_order_id=client_order_id, order_type="LMT", limit_price="182.00")


@pytest.fixture(scope="module")
def armed(django_db_setup, mcp_sim: SimGateway) -> Iterator[McpClient]:
    """An MCP server that sends orders to the (simulated) broker."""
    with stdio_mcp(mcp_env(mcp_sim, client_id=61, ORDERS_ENABLED="true")) as client:
        client.wait_ready()
        yield client


@pytest.fixture(scope="module")
def armed_modern(django_db_setup, mcp_sim: SimGateway) -> Iterator[McpClient]:
    """The same, to a client on the newest protocol (2026-07-28)."""
    with stdio_mcp(mcp_env(mcp_sim, client_id=63, ORDERS_ENABLED="true"), modern=True) as client:
        assert client.session.protocol_version == "2026-07-28"
        client.wait_ready()
        yield client


@pytest.fixture(scope="module")
def held(django_db_setup, mcp_sim: SimGateway) -> Iterator[McpClient]:
    """An MCP server whose orders wait for an operator's approval."""
    env = mcp_env(mcp_sim, client_id=65, ORDERS_ENABLED="true", APPROVAL_REQUIRED_FOR="mcp")
    with stdio_mcp(env) as client:
        client.wait_ready()
        yield client


@pytest.fixture
def quiet_market(mcp_sim: SimGateway) -> SimGateway:
    mcp_sim.pause_market()
    mcp_sim.set_price("AAPL", Decimal("190.00"))
    return mcp_sim


def _status(client: McpClient, order_id: str) -> str:
    return client.json("get_order", {"order_id": order_id})["status"]


def _sent(sim: SimGateway, client_order_id: str) -> list[Any]:
    return [o for o in sim.received_orders() if o.order_ref == client_order_id and not o.what_if]


def test_a_held_order_is_withdrawn_by_cancel_order_and_a_second_cancel_is_no_error(held, quiet_market):
    order = held.json("place_order", _resting("held-1"))
    assert order["status"] == "pending_approval"

    result = held.call("cancel_order", {"order_id": order["id"]})
    assert not result.is_error, result.content[0].text
    assert payload(result)["status"] == "cancelled"
    assert payload(result)["events"][-1]["code"] == "withdrawn"
    entry = AuditEntry.objects.get(event="order.withdrawn", target_id=order["id"])
    assert (entry.actor_kind, entry.correlation_id) == ("mcp", result.meta["correlation_id"])

    again = held.call("cancel_order", {"order_id": order["id"]})
    assert not again.is_error, again.content[0].text
    assert payload(again)["status"] == "cancelled"
    assert AuditEntry.objects.filter(event="order.withdrawn").count() == 1
    assert _sent(quiet_market, "held-1") == []
    assert quiet_market.received_cancels() == []


def test_cancelling_a_working_order_twice_is_no_error(armed, quiet_market):
    order = armed.json("place_order", _resting("cancel-2x"))
    wait_for(lambda: _status(armed, order["id"]) == "submitted", message="resting at the broker")
    first = armed.json("cancel_order", {"order_id": order["id"]})
    assert first["status"] in ("cancel_pending", "cancelled")
    wait_for(lambda: _status(armed, order["id"]) == "cancelled", message="cancel confirmed")
    again = armed.call("cancel_order", {"order_id": order["id"]})
    assert not again.is_error, again.content[0].text
    assert payload(again)["status"] == "cancelled"
    assert len([c for c in quiet_market.received_cancels()]) == 1


def test_an_order_the_broker_rejects_shows_ib_s_code_and_text_to_an_agent(armed, quiet_market):
    quiet_market.faults.reject_order("mcp-rej", "The order is not accepted.")
    order = armed.json("place_order", _resting("mcp-rej"))

    def events() -> list[tuple[str, str, str]]:
        return [
            (e["status"], e["code"], e["reason"]) for e in armed.json("get_order", {"order_id": order["id"]})["events"]
        ]

    rejected = ("rejected", "201", "Order rejected - reason:The order is not accepted.")
    wait_for(lambda: rejected in events(), message="the rejection's reason")
    assert _status(armed, order["id"]) == "rejected"


def test_modify_order_changes_the_working_order_at_the_broker_through_the_gates(armed, quiet_market):
    order = armed.json("place_order", _resting("modify-1"))
    wait_for(lambda: _status(armed, order["id"]) == "submitted", message="resting at the broker")

    changed = armed.json("modify_order", {"order_id": order["id"], "limit_price": "183.00", "quantity": "5"})
    modified = changed["events"][-1]["data"]["modified"]
    assert (Decimal(modified["quantity"]), Decimal(modified["limit_price"])) == (5, Decimal("183"))
    wait_for(
        lambda: any(o.lmt_price == 183 and o.total_quantity == 5 for o in _sent(quiet_market, "modify-1")),
        message="the modification reached the broker",
    )
    broker_order = next(o for o in quiet_market.orders() if o.order_ref == "modify-1")
    assert broker_order.total_quantity == 5

    # A limit 20% under the market is refused by the collar, as a new order would be; the broker keeps 183.
    refused = armed.call("modify_order", {"order_id": order["id"], "limit_price": "152.00"})
    assert refused.is_error
    assert payload(refused)["error"]["code"] == "risk_price_collar"
    assert [o.lmt_price for o in _sent(quiet_market, "modify-1")][-1] == Decimal("183.00")


def test_a_subscribed_order_resource_is_notified_of_the_fill(armed, quiet_market):
    order = armed.json("place_order", _resting("notify-1"))
    uri = f"ibkr://orders/{order['id']}"
    wait_for(lambda: _status(armed, order["id"]) == "submitted", message="resting at the broker")
    armed.subscribe(uri)
    armed.updated.clear()

    quiet_market.set_price("AAPL", Decimal("181.00"))  # the limit at 182 now fills

    wait_for(lambda: uri in armed.updated, message="notifications/resources/updated for the order")
    wait_for(lambda: armed.resource(uri)["status"] == "filled", message="resource shows the fill")
    filled = armed.resource(uri)
    assert Decimal(filled["filled_quantity"]) == 10
    assert len(filled["fills"]) >= 1
    assert set(armed.updated) == {uri}  # nothing about resources nobody subscribed to


def test_a_listening_client_is_told_of_the_fill_of_the_order_it_listens_to(armed_modern, quiet_market):
    """The newest protocol's subscriptions (`subscriptions/listen`): a stream that names the order's URI."""
    order = armed_modern.json("place_order", _resting("listen-1"))
    other = armed_modern.json("place_order", _resting("listen-2"))
    uri = f"ibkr://orders/{order['id']}"
    wait_for(lambda: _status(armed_modern, order["id"]) == "submitted", message="resting at the broker")
    events = armed_modern.listen(uri)

    quiet_market.set_price("AAPL", Decimal("181.00"))  # both limits at 182 now fill

    wait_for(lambda: uri in events, message="a resources/updated event on the listen stream")
    wait_for(lambda: _status(armed_modern, other["id"]) == "filled", message="the other order filled too")
    wait_for(lambda: armed_modern.resource(uri)["status"] == "filled", message="resource shows the fill")
    assert set(events) == {uri}  # the other order's fill is not on this stream
    assert set(armed_modern.updated) == {uri}  # (the session hands the stream's notifications on as well)


def test_subscribing_to_an_unknown_resource_is_refused(armed):
    with pytest.raises(Exception, match="No resource"):
        armed.subscribe("ibkr://orders/00000000-0000-0000-0000-000000000000")


def _blocking_codes(result: Any) -> set[str]:
    """The codes a preview says would block the order (each with the code place_order would return)."""
    assert not result.is_error, result.content[0].text
    preview = payload(result)
    assert preview["ok"] is not bool(preview["blocks"])
    assert (preview["would_be"] == "refused") is bool(preview["blocks"])
    return {block["code"] for block in preview["blocks"]}


def test_preview_reports_what_place_would_refuse(armed, quiet_market):
    assert _blocking_codes(armed.call("preview_order", _resting("preview-ok"))) == set()
    assert "risk_max_quantity" in _blocking_codes(armed.call("preview_order", _order(quantity="5000")))
    assert "risk_price_collar" in _blocking_codes(
        armed.call("preview_order", _order(order_type="LMT", limit_price="95.00"))
    )
    assert "risk_max_notional" in _blocking_codes(armed.call("preview_order", _order(quantity="900")))
    # Place refuses each of these with the same code.
    refused = armed.call("place_order", _order(quantity="5000", client_order_id="preview-5000"))
    assert payload(refused)["error"]["code"] == "risk_max_quantity"

    trading_halt(actor=Actor.system(label="operator"), reason="test")
    assert "trading_halted" in _blocking_codes(armed.call("preview_order", _order()))
    assert _sent(quiet_market, "preview-ok") == []
    assert armed.json("list_orders")["count"] == 0
