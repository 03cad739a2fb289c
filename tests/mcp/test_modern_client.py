"""The MCP SDK's high-level `Client` with its defaults: it probes `server/discover` and speaks the newest
protocol (2026-07-28) when the server does, as an agent built on the SDK today would."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from anyio.from_thread import start_blocking_portal
from mcp.client.client import Client

from brokers.sim.server import SimGateway
from ibkrgw.actors import Actor
from ibkrgw.models import ScopedAPIKey
from orders.models import Order
from orders.services import trading_halt
from tests.conftest import wait_for
from tests.mcp.conftest import http_process, http_transport, mcp_env, payload

pytestmark = pytest.mark.django_db(transaction=True)
TRADE_TOOLS = {"place_order", "modify_order", "cancel_order"}


@pytest.fixture(scope="module")
def mcp_url(django_db_setup, mcp_sim: SimGateway) -> Iterator[str]:
    with http_process({**mcp_env(mcp_sim, client_id=27), "HOME": os.environ.get("HOME", "/tmp")}) as (url, _):
        yield url


@contextmanager
def modern_client(url: str, scope: str):
    """A default `Client` over HTTP with a new API key of `scope`; yields (portal, client)."""
    _, secret = ScopedAPIKey.objects.create_key(name=f"modern-{scope}", scope=scope)
    with start_blocking_portal() as portal:
        client = portal.wrap_async_context_manager(Client(http_transport(url, secret), read_timeout_seconds=30))
        with client as connected:
            yield portal, connected


def test_a_default_sdk_client_speaks_the_newest_protocol_and_reads(mcp_url, mcp_sim, transactional_db):
    with modern_client(mcp_url, "read") as (portal, client):
        assert client.session.protocol_version == "2026-07-28"
        tools = {tool.name for tool in portal.call(client.list_tools).tools}
        assert "get_quote" in tools and not TRADE_TOOLS & tools  # a read key is offered no trade tool
        quote = portal.call(client.call_tool, "get_quote", {"symbol": "MSFT"})
        assert not quote.is_error
        assert payload(quote)["con_id"] == mcp_sim.con_id("MSFT")
        status = portal.call(client.read_resource, "ibkr://trading-status")
        assert json.loads(status.contents[0].text)["trading_halted"] is False
        prompts = {prompt.name for prompt in portal.call(client.list_prompts).prompts}
        assert prompts == {"check_position"}  # the trade prompt is left out, like the trade tools


def test_a_default_sdk_client_places_an_order_and_gets_errors_in_the_rest_shape(mcp_url, transactional_db):
    with modern_client(mcp_url, "trade") as (portal, client):
        bad = portal.call(client.call_tool, "place_order", {"symbol": "AAPL", "action": "BUY", "quantity": "-1"})
        assert bad.is_error
        assert payload(bad)["error"]["code"] == "invalid_request"
        order = {"client_order_id": "modern-1", "symbol": "AAPL", "action": "BUY", "quantity": "1"}
        placed = portal.call(client.call_tool, "place_order", {**order, "order_type": "MKT"})
        assert not placed.is_error, placed.content[0].text
        assert payload(placed)["status"] == "simulated"  # orders are not enabled: recorded, not sent
        unknown = portal.call(client.call_tool, "no_such_tool", {})
        assert unknown.is_error
        prompts = {prompt.name for prompt in portal.call(client.list_prompts).prompts}
        assert prompts == {"check_position", "place_limit_order_safely"}
    assert Order.objects.filter(client_order_id="modern-1").count() == 1


def test_a_default_sdk_client_listening_over_http_is_told_of_a_halt(mcp_url, transactional_db):
    status = "ibkr://trading-status"
    events: list[str] = []
    with modern_client(mcp_url, "read") as (portal, client):
        acknowledged = threading.Event()

        async def stream() -> None:
            async with client.listen(resource_subscriptions=[status]) as subscription:
                acknowledged.set()
                async for event in subscription:
                    events.append(str(event.uri))

        listening = portal.start_task_soon(stream)
        wait_for(lambda: acknowledged.is_set() or listening.done(), message="subscriptions/acknowledged")
        assert not listening.done(), listening.exception()
        trading_halt(actor=Actor.system(label="operator"), reason="test")
        wait_for(lambda: status in events, message="a resources/updated event for the trading status")
        assert json.loads(portal.call(client.read_resource, status).contents[0].text)["trading_halted"] is True
        listening.cancel()
