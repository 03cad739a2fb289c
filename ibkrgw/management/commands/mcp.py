"""`manage.py mcp [--transport stdio|http] [--host 127.0.0.1] [--port 8765] [--read-only]`: the MCP door.

stdio (the default) is for Claude Desktop and IDE agents that start the server themselves: the
protocol owns stdout, so every log line goes to stderr. http serves streamable HTTP on
127.0.0.1, checks `Origin` and requires `Authorization: Api-Key <key>` (see ibkrgw/mcp_server.py).
`--read-only` (or MCP_READ_ONLY=true) leaves out every tool that places, changes or cancels orders.

The command owns this process's broker connection and closes it on exit, on SIGTERM or SIGINT.
Several of these processes may run at once (Claude Desktop and an editor with the same
configuration): each claims the first IB client id from IB_MCP_CLIENT_ID on that no other process
on this machine holds (`brokers.client_ids`), and moves on to the next when IB itself refuses an id
(error 326: held by a connection elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anyio
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from brokers import runtime
from brokers.client_ids import ClientIdClaim, NoFreeClientId, client_id_claim
from ibkrgw.mcp_server import LOCAL_HOSTNAMES, build_server
from ibkrgw.mcp_transport import serve_http, serve_stdio

logger = logging.getLogger(__name__)
CLASH = "client_id_in_use"


def _wait_connected(worker: Any, timeout: float) -> str:
    """ "connected", "clash" (IB error 326) or "timeout" (the worker keeps trying in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.state == "connected":
            return "connected"
        if worker.down_reason == CLASH:
            return "clash"
        time.sleep(0.02)
    return "connected" if worker.state == "connected" else "timeout"


def connect() -> ClientIdClaim:
    """Start this process's broker runtime with a client id nobody else uses; returns the claim held."""
    host, port = runtime.gateway_address()
    first = settings.IB_MCP_CLIENT_ID
    try:
        claim = client_id_claim(gateway=f"{host}:{port}", first=first, last=first + settings.IB_MCP_CLIENT_ID_COUNT - 1)
    except NoFreeClientId as exc:
        raise CommandError(f"{exc} Stop some MCP servers or raise IB_MCP_CLIENT_ID_COUNT.") from exc
    while True:
        runtime.start(client_id=claim.client_id)
        worker = runtime.current().worker
        outcome = _wait_connected(worker, settings.IB_CONNECT_TIMEOUT)
        if outcome == "connected":
            logger.info("mcp: connected to IB as client id %s", claim.client_id)
            return claim
        if outcome == "timeout":
            # Not fatal: the worker keeps reconnecting, and tools answer broker_unavailable with the cause.
            logger.warning("mcp: the broker is not connected yet (%s)", worker.last_error or "connecting")
            return claim
        logger.warning("mcp: IB refused client id %s (%s)", claim.client_id, worker.last_error)
        try:
            following = claim.next()
        except NoFreeClientId:
            # Keep the last id: the worker retries, and every tool reports IB error 326 as the cause.
            logger.error("mcp: no free IB client id up to %s; tools will report the clash", claim.last)
            return claim
        runtime.stop()
        claim = following


class SimulatedGatewayKeeper:
    """With IB_GATEWAY=sim the simulated gateway lives in the first process that needed it. When that
    process ends (Claude Desktop closed while an editor's server runs on), start one here instead of
    answering broker_unavailable for ever: the broker runtime restarts, which starts the gateway."""

    CHECK_INTERVAL_S = 1.0

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mcp-sim-keeper", daemon=True)

    def start(self) -> None:
        if settings.IB_GATEWAY == "sim":
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.CHECK_INTERVAL_S):
            current = runtime.current()
            if current is None or getattr(current.worker, "down_reason", "") != "refused":
                continue
            logger.warning("mcp: the simulated IB Gateway went away; starting one in this process")
            runtime.stop()
            if not self._stop.is_set():
                runtime.start(client_id=self.client_id)


class Command(BaseCommand):
    help = "Run the MCP server (stdio for Claude Desktop and IDE agents, or streamable HTTP on 127.0.0.1)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
        parser.add_argument("--host", default="127.0.0.1", help="http only; loopback unless you know why not")
        parser.add_argument("--port", type=int, default=8765, help="http only")
        parser.add_argument(
            "--read-only",
            action="store_true",
            help="offer no tool that places, changes or cancels orders (also MCP_READ_ONLY=true)",
        )

    def handle(self, *args: Any, transport: str, host: str, port: int, read_only: bool, **options: Any) -> None:
        read_only = read_only or settings.MCP_READ_ONLY
        server = build_server(transport="http" if transport == "http" else "stdio", read_only=read_only)
        if transport == "http" and host not in LOCAL_HOSTNAMES:
            logger.warning("mcp: listening on %s, beyond this machine; every request still needs an API key", host)
        if read_only:
            logger.info("mcp: read-only, no order tools")
        claim = connect()
        keeper = SimulatedGatewayKeeper(claim.client_id)
        keeper.start()
        try:
            if transport == "http":
                logger.info("mcp: streamable HTTP on http://%s:%s/mcp", host, port)
                anyio.run(lambda: serve_http(server, host=host, port=port))
            else:
                anyio.run(serve_stdio, server)
        finally:
            keeper.stop()
            runtime.stop()
            claim.release()
            logger.info("mcp: stopped")
