"""The Claude Desktop configuration in docs/mcp.md starts a working server from this checkout."""

from __future__ import annotations

import json
import re

import pytest
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.mcp.conftest import ROOT, mcp_env, mcp_session

pytestmark = pytest.mark.django_db(transaction=True)


def _desktop_config() -> dict:
    text = (ROOT / "docs" / "mcp.md").read_text()
    block = next(b for b in re.findall(r"```json\n(.*?)```", text, re.S) if '"mcpServers"' in b)
    return json.loads(block.replace("/path/to/ibkr-gateway", str(ROOT)))["mcpServers"]["ibkr-gateway"]


def test_the_documented_desktop_configuration_serves_the_tools(django_db_setup, mcp_sim):
    server = _desktop_config()
    # As Claude Desktop runs it: its own working directory, the documented command, args and env;
    # only the test database and the test's simulated gateway are added.
    env = {**mcp_env(mcp_sim, client_id=91), **server["env"]}
    params = StdioServerParameters(command=server["command"], args=server["args"], cwd="/", env=env)
    with mcp_session(stdio_client(params)) as client:
        assert {"get_quote", "preview_order", "place_order"} <= {tool.name for tool in client.tools()}
        assert client.json("get_quote", {"symbol": "AAPL"})["con_id"] == mcp_sim.con_id("AAPL")
        assert client.resource("ibkr://trading-status")["orders_enabled"] is False
