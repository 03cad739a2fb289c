"""The MCP door: one `MCPServer` built from each app's `mcp_tools` module.

An app's `mcp_tools` module lists `TOOLS` (made with `@mcp_tool` of `ibkrgw.web.mcp`) and optionally `RESOURCES`.
A tool body is three lines, as in a REST view: validated input serializer -> service or
selector -> output serializer `.data`. Everything around the body lives here, once:

* arguments go, untouched, to the tool's DRF input serializer: the same validator as REST, so
  unknown arguments and bad values fail with the same `invalid_request` details;
* each call gets a fresh correlation id (`correlation_id_var`) and an `Actor(kind=mcp)`;
* over HTTP the `Authorization: Api-Key <key>` header is looked up again on every call and
  must allow the tool's scope (`read`, or `trade` for place/cancel);
* the body runs in a worker thread (the ORM is sync), between `close_old_connections()` calls;
* any error becomes an MCP tool error (`isError`) carrying the REST error body
  `{"error": {"code", "message", "details"}}`, rendered by the REST exception handler itself.

No tool can release the kill switch or change trading settings: there is no such tool, and
`TOOLS` is the only way to add one.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from importlib import import_module
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import close_old_connections
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent
from pydantic import ConfigDict
from rest_framework import serializers
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ibkrgw.actors import Actor, ActorKind, Source, correlation_id_var
from ibkrgw.auth import KEYWORD, api_key_from_string
from ibkrgw.errors import ErrorCode, GatewayError, exception_handler
from ibkrgw.limits import check_json, max_body_bytes, too_large
from ibkrgw.models import Scope as KeyScope
from ibkrgw.models import ScopedAPIKey
from ibkrgw.web.mcp import McpResource, McpTool

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]
APP_MODULES = ("brokers.mcp_tools", "marketdata.mcp_tools", "orders.mcp_tools")
LOCAL_HOSTNAMES = ("127.0.0.1", "localhost", "::1")
SHUTDOWN_GRACE_S = 5

INSTRUCTIONS = """\
Interactive Brokers through ibkr-gateway. Tools mirror the REST API (/api/v1/) by name, arguments
and JSON shape. Orders pass the same gates as every other door: with the default settings
(paper mode, ORDERS_ENABLED=false) place_order records the order as `simulated` and nothing is
sent to the broker. Call preview_order before place_order, and give every order a
client_order_id so a retry replays the original result instead of placing a second order. Read
the resource ibkr://trading-status for the trading mode, the kill switch and the risk limits.
This server cannot release the kill switch or change any trading setting; only the operator can.
Errors carry {"error": {"code", "message", "details"}} with the REST error codes."""


# -- the JSON schema an agent sees, derived from the DRF input serializer ------------------------
def _field_schema(field: serializers.Field) -> dict[str, Any]:
    schema: dict[str, Any]
    if isinstance(field, serializers.BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, serializers.IntegerField):
        schema = {"type": "integer"}
        schema.update({k: v for k, v in (("minimum", field.min_value), ("maximum", field.max_value)) if v is not None})
    elif isinstance(field, serializers.DecimalField):
        # A string keeps the exact decimal; a JSON number is accepted as REST accepts it.
        schema = {"type": ["string", "number"], "description": 'Decimal, preferably as a string, e.g. "189.50".'}
    elif isinstance(field, serializers.ChoiceField):
        schema = {"type": "string", "enum": [str(choice) for choice in field.choices]}
    elif isinstance(field, serializers.DateTimeField):
        schema = {"type": "string", "format": "date-time"}
    elif isinstance(field, serializers.UUIDField):
        schema = {"type": "string", "format": "uuid"}
    else:
        schema = {"type": "string"}
        if getattr(field, "max_length", None):
            schema["maxLength"] = field.max_length
        pattern = next((v.regex.pattern for v in field.validators if isinstance(v, RegexValidator)), None)
        if pattern:
            schema["pattern"] = pattern
    if getattr(field, "allow_null", False):
        schema["type"] = [*([schema["type"]] if isinstance(schema["type"], str) else schema["type"]), "null"]
    if field.help_text:
        schema["description"] = str(field.help_text)
    if field.default not in (serializers.empty, None, "") and not callable(field.default):
        schema["default"] = field.default
    return schema


def input_schema(serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    fields = serializer_class().fields
    return {
        "type": "object",
        "properties": {name: _field_schema(field) for name, field in fields.items()},
        "required": [name for name, field in fields.items() if field.required],
        "additionalProperties": False,
    }


# -- running one call: the one wrapper for actor, correlation id, threads and errors ---------------
def api_key_from_header(value: str | None) -> ScopedAPIKey | None:
    prefix = KEYWORD + " "
    if not value or not value.startswith(prefix):
        return None
    return api_key_from_string(value[len(prefix) :].strip())


def _actor(transport: Transport, headers: Mapping[str, str], scope: KeyScope, correlation_id: str) -> Actor:
    if transport == "stdio":
        # The operator started this process on their own machine, as with any management command.
        return Actor(kind=ActorKind.MCP, label="mcp:stdio", source=Source.MCP, correlation_id=correlation_id)
    key = api_key_from_header(headers.get("authorization"))
    if key is None:
        raise GatewayError(ErrorCode.NOT_AUTHENTICATED, "Invalid, expired or revoked API key.", http_status=401)
    if not key.allows(scope):
        raise GatewayError(
            ErrorCode.PERMISSION_DENIED, f"This tool needs an API key with scope '{scope}'.", http_status=403
        )
    label = f"mcp:{key.name} ({key.prefix})"
    return Actor(kind=ActorKind.MCP, label=label, source=Source.MCP, correlation_id=correlation_id)


def _jsonable(data: Any) -> Any:
    # Serializer `.data` may still hold Decimal, UUID or datetime values (e.g. in JSON fields).
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _result(payload: Any, correlation_id: str, *, error: bool = False) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(payload))],
        # structuredContent must be an object: list-shaped REST answers travel as text only.
        structured_content=payload if isinstance(payload, dict) else None,
        is_error=error,
        _meta={"correlation_id": correlation_id},
    )


def run_tool(
    tool: McpTool, arguments: dict[str, Any], *, transport: Transport, headers: Mapping[str, str]
) -> CallToolResult:
    """Run one call synchronously (in a worker thread). Never raises: errors become tool errors."""
    correlation_id = uuid.uuid4().hex
    token = correlation_id_var.set(correlation_id)
    close_old_connections()
    try:
        actor = _actor(transport, headers, tool.scope, correlation_id)
        check_json(arguments)  # depth, surrogates and control characters: the same limits as REST
        data = tool.input(data=arguments)
        data.is_valid(raise_exception=True)
        payload = _jsonable(tool.body(data, actor))
        logger.info("mcp %s by %s: ok", tool.name, actor.label)
        return _result(payload, correlation_id)
    except Exception as exc:
        # The REST handler renders (and logs, when unexpected) every error with the same codes.
        payload = _jsonable(exception_handler(exc, {"view": f"mcp:{tool.name}"}).data)
        logger.info("mcp %s: %s", tool.name, payload["error"]["code"])
        return _result(payload, correlation_id, error=True)
    finally:
        close_old_connections()
        correlation_id_var.reset(token)


class _RawArguments(ArgModelBase):
    """Hands the caller's arguments to the tool as they came.

    The SDK's generated argument model would silently drop unknown keys (pydantic's default
    `extra="ignore"`); the DRF input serializer must see them to reject them, as REST does.
    """

    model_config = ConfigDict(extra="allow")

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"arguments": dict(self.model_extra or {})}


def _sdk_tool(tool: McpTool, transport: Transport) -> Tool:
    async def call(arguments: dict[str, Any], ctx: Context) -> CallToolResult:
        headers = dict(ctx.headers or {}) if transport == "http" else {}
        return await anyio.to_thread.run_sync(partial(run_tool, tool, arguments, transport=transport, headers=headers))

    sdk_tool = Tool.from_function(
        call,
        name=tool.name,
        title=tool.title,
        description=tool.description,
        annotations=tool.annotations,
        structured_output=False,
    )
    return sdk_tool.model_copy(
        update={"parameters": input_schema(tool.input), "fn_metadata": FuncMetadata(arg_model=_RawArguments)}
    )


def _read_resource(resource: McpResource) -> str:
    close_old_connections()
    try:
        return json.dumps(resource.read(), cls=DjangoJSONEncoder)
    finally:
        close_old_connections()


def _add_resource(server: MCPServer, resource: McpResource) -> None:
    async def read() -> str:
        return await anyio.to_thread.run_sync(partial(_read_resource, resource))

    server.resource(resource.uri, name=resource.name, description=resource.description, mime_type="application/json")(
        read
    )


def collect() -> tuple[list[McpTool], list[McpResource]]:
    """Every app's tools and resources; a name used twice fails loudly."""
    tools: list[McpTool] = []
    resources: list[McpResource] = []
    for path in APP_MODULES:
        module = import_module(path)
        tools.extend(module.TOOLS)
        resources.extend(getattr(module, "RESOURCES", []))
    names = [tool.name for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuntimeError(f"MCP tools registered twice: {duplicates}")
    return tools, resources


def build_server(*, transport: Transport = "stdio") -> MCPServer:
    tools, resources = collect()
    server = GatewayMCPServer(
        name="ibkr-gateway",
        instructions=INSTRUCTIONS,
        tools=[_sdk_tool(tool, transport) for tool in tools],
    )
    for resource in resources:
        _add_resource(server, resource)
    return server


# -- HTTP: Origin and API key checked before any MCP message is read --------------------------------
def origin_allowed(origin: str) -> bool:
    """Only pages served from this machine; a browser tab on any other site is refused (DNS rebinding)."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in LOCAL_HOSTNAMES


def _refuse(code: ErrorCode, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(GatewayError(code, message).as_dict(), status, headers=headers)


def _key_lookup(header: str | None) -> ScopedAPIKey | None:
    close_old_connections()
    try:
        return api_key_from_header(header)
    finally:
        close_old_connections()


class HttpGuard:
    """ASGI wrapper: 403 for a foreign `Origin`, 401 without a valid `Authorization: Api-Key <key>`.

    The scope of the key is checked per tool call (read for reads, trade for place/cancel).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > max_body_bytes():
            response = JSONResponse(too_large(None, max_body_bytes()).as_dict(), 413)
        elif origin is not None and not origin_allowed(origin):
            logger.warning("mcp http: refused Origin %r", origin)
            response = _refuse(ErrorCode.PERMISSION_DENIED, "This Origin is not allowed.", 403)
        elif await anyio.to_thread.run_sync(_key_lookup, headers.get("authorization")) is None:
            response = _refuse(
                ErrorCode.NOT_AUTHENTICATED,
                "An API key is required: Authorization: Api-Key <key>.",
                401,
                headers={"WWW-Authenticate": KEYWORD},
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def http_app(server: MCPServer, *, host: str) -> ASGIApp:
    # The SDK's own Host/Origin checks stay on too (defence in depth against DNS rebinding).
    def bracket(name: str) -> str:
        return f"[{name}]" if ":" in name else name

    local = [bracket(name) for name in LOCAL_HOSTNAMES]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in {bracket(host), *local}],
        allowed_origins=[
            f"{scheme}://{name}{port}" for scheme in ("http", "https") for name in local for port in ("", ":*")
        ],
    )
    return HttpGuard(server.streamable_http_app(host=host, transport_security=security))


# -- serving, with signal -> flag -> bounded shutdown ------------------------------------------------
class _DaemonStdin:
    """stdin lines for the stdio transport, read by a daemon thread.

    The SDK reads stdin in an anyio worker thread that cancellation cannot interrupt, so SIGTERM
    would wait for the client's next message. A daemon reader never holds up shutdown.
    """

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[str](16)
        self._reader: threading.Thread | None = None

    def __aiter__(self) -> _DaemonStdin:
        return self

    async def __anext__(self) -> str:
        if self._reader is None:
            token = anyio.lowlevel.current_token()
            self._reader = threading.Thread(target=self._pump, args=(token,), name="mcp-stdin", daemon=True)
            self._reader.start()
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def _pump(self, token: anyio.lowlevel.EventLoopToken) -> None:
        try:
            with open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False) as wire:
                while line := wire.readline():
                    anyio.from_thread.run(self._send.send, line, token=token)
            anyio.from_thread.run(self._send.aclose, token=token)
        except (RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the event loop is gone or stopped listening: we are shutting down


class GatewayMCPServer(MCPServer):
    async def run_stdio_async(self) -> None:
        """As the SDK's, with a stdin that cannot block shutdown; stdout stays the SDK's (fd 1 -> stderr)."""
        async with stdio_server(stdin=_DaemonStdin()) as (read_stream, write_stream):  # type: ignore[arg-type]
            await self._lowlevel_server.run(
                read_stream, write_stream, self._lowlevel_server.create_initialization_options()
            )


async def _stop_on_signal(stop: Callable[[], None]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("mcp: %s received, shutting down", signal.Signals(signum).name)
            stop()
            return


async def serve_stdio(server: MCPServer) -> None:
    """Serve until stdin closes or SIGTERM/SIGINT; calls in flight finish first (bounded by IB's timeouts)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, tg.cancel_scope.cancel)
        await server.run_stdio_async()
        tg.cancel_scope.cancel()  # the client closed stdin


async def serve_http(server: MCPServer, *, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; open requests get SHUTDOWN_GRACE_S seconds to finish."""
    import uvicorn

    class _Server(uvicorn.Server):
        def capture_signals(self) -> AbstractContextManager[None]:  # type: ignore[override]
            # Our handler stops it; uvicorn's would re-raise the signal after shutdown and kill
            # the process before the broker connection is closed.
            return nullcontext()

    config = uvicorn.Config(
        http_app(server, host=host),
        host=host,
        port=port,
        log_config=None,  # keep Django's logging (stderr)
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    uv = _Server(config)

    def stop() -> None:
        uv.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, stop)
        await uv.serve()
        tg.cancel_scope.cancel()
