"""`manage.py mcp [--transport stdio|http] [--host 127.0.0.1] [--port 8765]`: the MCP door.

stdio (the default) is for Claude Desktop and IDE agents that start the server themselves: the
protocol owns stdout, so every log line goes to stderr. http serves streamable HTTP on
127.0.0.1, checks `Origin` and requires `Authorization: Api-Key <key>` (see ibkrgw/mcp_server.py).

The command owns this process's broker connection (client id IB_MCP_CLIENT_ID) and closes it on
exit, on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from brokers import runtime
from ibkrgw.mcp_server import LOCAL_HOSTNAMES, build_server, serve_http, serve_stdio

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the MCP server (stdio for Claude Desktop and IDE agents, or streamable HTTP on 127.0.0.1)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
        parser.add_argument("--host", default="127.0.0.1", help="http only; loopback unless you know why not")
        parser.add_argument("--port", type=int, default=8765, help="http only")

    def handle(self, *args: Any, transport: str, host: str, port: int, **options: Any) -> None:
        server = build_server(transport="http" if transport == "http" else "stdio")
        if transport == "http" and host not in LOCAL_HOSTNAMES:
            logger.warning("mcp: listening on %s, beyond this machine; every request still needs an API key", host)
        runtime.start(client_id=settings.IB_MCP_CLIENT_ID)
        worker = runtime.current().worker
        if not worker.wait_connected(settings.IB_CONNECT_TIMEOUT):
            # Not fatal: the worker keeps reconnecting, and tools answer broker_unavailable meanwhile.
            logger.warning("mcp: the broker is not connected yet (%s)", worker.health().last_error or "connecting")
        try:
            if transport == "http":
                logger.info("mcp: streamable HTTP on http://%s:%s/mcp", host, port)
                anyio.run(lambda: serve_http(server, host=host, port=port))
            else:
                anyio.run(serve_stdio, server)
        finally:
            runtime.stop()
            logger.info("mcp: stopped")
