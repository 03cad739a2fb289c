"""Run `manage.py mcp` as a subprocess against the test database and a simulated gateway, and drive it
with the MCP SDK's own client.

The SDK client is async; sync tests drive it through an anyio blocking portal, so they can use the
ORM and `api_client` directly. The subprocess gets the pytest-django database file through
DATABASE_URL and the simulator through IB_GATEWAY, with its own IB client id.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp_types import CallToolResult, Implementation, ResourceUpdatedNotification, Tool

from brokers.sim.server import SimGateway
from tests.conftest import anchor_stock_prices, subprocess_database_url, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class McpClient:
    """A connected `ClientSession`, callable from sync code."""

    portal: BlockingPortal
    session: ClientSession
    server_info: Implementation | None  # None on the newest protocol (server/discover has none)
    updated: list[str]  # URIs of the notifications/resources/updated received, in order
    listening: list[Future] = field(default_factory=list)  # listen streams, closed with the session

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        return self.portal.call(self.session.call_tool, tool, arguments or {})

    def json(self, tool: str, arguments: dict[str, Any] | None = None) -> Any:
        """The tool's JSON answer; fails the test on a tool error."""
        result = self.call(tool, arguments)
        assert not result.is_error, result.content[0].text
        return payload(result)

    def tools(self) -> list[Tool]:
        return self.portal.call(self.session.list_tools).tools

    def resource(self, uri: str) -> Any:
        result = self.portal.call(self.session.read_resource, uri)
        return json.loads(result.contents[0].text)

    def subscribe(self, uri: str) -> None:
        self.portal.call(self.session.subscribe_resource, uri)

    def listen(self, *uris: str, trading: bool = False) -> list[str]:
        """Open a `subscriptions/listen` stream (the newest protocol's subscriptions) for `uris`; returns the
        list the URIs of its `resources/updated` events are appended to, once the server acknowledged it."""
        events: list[str] = []
        acknowledged = threading.Event()

        async def stream() -> None:
            async with listen(self.session, resource_subscriptions=list(uris)) as subscription:
                acknowledged.set()
                async for event in subscription:
                    events.append(str(event.uri))

        self.listening.append(self.portal.start_task_soon(stream))
        wait_for(lambda: acknowledged.is_set() or self.listening[-1].done(), message="subscriptions/acknowledged")
        if self.listening[-1].done():
            self.listening[-1].result()  # the listen request's error
        return events

    def wait_ready(self) -> None:
        """Connected and reconciled: the state in which the gateway accepts orders."""
        wait_for(lambda: self.json("get_health")["gateway"]["reconciled"], timeout=20, message="mcp reconciled")


def payload(result: CallToolResult) -> Any:
    return json.loads(result.content[0].text)


def mcp_env(sim: SimGateway | None, client_id: int, **extra: str) -> dict[str, str]:
    """The environment of a `manage.py mcp` on `sim` (None: IB_GATEWAY=sim, the server's own simulated gateway)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "ibkrgw.settings",
        "DATABASE_URL": subprocess_database_url(),
        "IB_GATEWAY": f"127.0.0.1:{sim.port}" if sim is not None else "sim",
        "TRADING_HOURS": "always",  # the simulated market never closes
        # The first id tried; the in-process runtime of other tests uses 1.
        "IB_MCP_CLIENT_ID": str(client_id),
        **extra,
    }


@contextmanager
def mcp_session(transport: AbstractAsyncContextManager[Any], *, modern: bool = False) -> Iterator[McpClient]:
    """A session on `transport`: the handshake of protocol 2025-11-25 (`initialize`), or, `modern`, the newest
    protocol's `server/discover` (2026-07-28: no `resources/subscribe`, `subscriptions/listen` instead)."""
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(str(message.params.uri))

    with start_blocking_portal() as portal, ExitStack() as stack:
        read, write = stack.enter_context(portal.wrap_async_context_manager(transport))
        session = stack.enter_context(
            portal.wrap_async_context_manager(
                ClientSession(read, write, read_timeout_seconds=30, message_handler=on_message)
            )
        )
        server_info = None if modern and portal.call(session.discover) else portal.call(session.initialize).server_info
        client = McpClient(portal, session, server_info, updated)
        try:
            yield client
        finally:
            for task in client.listening:
                task.cancel()


@contextmanager
def stdio_mcp(env: dict[str, str], *args: str, modern: bool = False) -> Iterator[McpClient]:
    params = StdioServerParameters(command=sys.executable, args=["manage.py", "mcp", *args], cwd=ROOT, env=env)
    with mcp_session(stdio_client(params), modern=modern) as client:
        yield client


@asynccontextmanager
async def http_transport(url: str, key: str) -> AsyncIterator[Any]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Api-Key {key}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


@contextmanager
def http_mcp(url: str, key: str) -> Iterator[McpClient]:
    with mcp_session(http_transport(url, key)) as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`manage.py mcp --transport http` on a free port; stopped with SIGTERM, which must end it cleanly."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mcp", "--transport", "http", "--port", str(port)], cwd=ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "manage.py mcp --transport http exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mcp http did not start listening"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture(scope="module")
def mcp_sim() -> Iterator[SimGateway]:
    """One simulated gateway per module, shared by its MCP subprocess (started once per module)."""
    gateway = SimGateway(host="127.0.0.1", port=0, trading_hours="always", ib_limits=False).start()
    anchor_stock_prices(gateway)
    yield gateway
    gateway.stop()
