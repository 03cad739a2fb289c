"""A halt pushed to MCP subscribers, over stdio and over HTTP.

Each test runs a server of its own, stopped with the test: every gateway process that trusted a halt
takes a ledger that then starts over (as each test's database does) for rows deleted behind its back,
and stays halted. No server shared with other tests may see these halts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from brokers.sim.server import SimGateway
from ibkrgw.actors import Actor
from ibkrgw.models import ScopedAPIKey
from orders.services import trading_halt
from tests.conftest import wait_for
from tests.mcp.conftest import McpClient, http_mcp, http_process, mcp_env, stdio_mcp

pytestmark = pytest.mark.django_db(transaction=True)
STATUS = "ibkr://trading-status"


@pytest.fixture
def stdio_server(django_db_setup, mcp_sim: SimGateway) -> Iterator[McpClient]:
    with stdio_mcp(mcp_env(mcp_sim, client_id=62, ORDERS_ENABLED="true")) as client:
        client.wait_ready()
        yield client


@pytest.fixture
def http_url(django_db_setup, mcp_sim: SimGateway) -> Iterator[str]:
    with http_process({**mcp_env(mcp_sim, client_id=26), "HOME": os.environ.get("HOME", "/tmp")}) as (url, _):
        yield url


def test_a_subscribed_trading_status_is_notified_of_a_halt(stdio_server):
    assert stdio_server.resource(STATUS)["trading_halted"] is False
    stdio_server.subscribe(STATUS)
    stdio_server.updated.clear()
    trading_halt(actor=Actor.system(label="operator"), reason="test")
    wait_for(lambda: STATUS in stdio_server.updated, message="notified of the halt")
    status = stdio_server.resource(STATUS)
    assert status["trading_halted"] is True
    assert status["orders_reach_broker"] is False


def test_http_subscriber_is_notified_of_a_halt(http_url):
    _, secret = ScopedAPIKey.objects.create_key(name="agent-read", scope="read")
    with http_mcp(http_url, secret) as client:
        client.subscribe(STATUS)
        trading_halt(actor=Actor.system(label="operator"), reason="test")
        wait_for(lambda: STATUS in client.updated, message="notified over HTTP")
        assert client.resource(STATUS)["trading_halted"] is True
