"""The MCP door: one `MCPServer` built from each app's `mcp_tools` module.

An app's `mcp_tools` module lists `TOOLS` (made with `@mcp_tool` of `ibkrgw.web.mcp`) and
optionally `RESOURCES`, `PROMPTS` and the `resource_known`/`resources_changed` pair for
subscriptions. A tool body is three lines, as in a REST view: validated input serializer ->
service or selector -> the entity's payload. Everything around the body lives here, once:

* arguments go, untouched, to the tool's DRF input serializer: the same validator as REST, so
  unknown arguments and bad values fail with the same `invalid_request` details;
* every tool publishes an `outputSchema` derived from its DRF output serializer, and answers
  with `structuredContent` (and the same JSON as text, for clients that read only text);
* each call gets a fresh correlation id (`correlation_id_var`) and an `Actor(kind=mcp)`;
* over HTTP the `Authorization: Api-Key <key>` header is looked up again on every call and
  must allow the tool's scope (`read`, or `trade` for tools that change orders); `tools/list`
  shows only the tools the key may call. In read-only mode trade tools are not registered;
* the body runs in a worker thread (the ORM is sync), between `close_old_connections()` calls;
* any error becomes an MCP tool error (`isError`) carrying the REST error body
  `{"error": {"code", "message", "details"}}`, rendered by the REST exception handler itself;
* a refused call of a trade tool (bad arguments, a `read` key, an unknown order, a read-only
  server) is audited as REST audits a refused order request (`orders.services.refusal_audit`);
* a prompt's arguments pass its input serializer (the tools' own fields) before it is rendered; a
  bad one is an `invalid_params` error carrying the same REST error body, never prompt text;
* resources can be subscribed to (`resources/subscribe`, or `subscriptions/listen` on the newest
  protocol): `ResourceWatch` polls the ledger and sends `notifications/resources/updated` when an
  order changes or the trading status does.

How the server is reached (stdio, HTTP with its Origin and key checks, shutdown on signals) is in
`ibkrgw.mcp_transport`.

No tool can release the kill switch or change trading settings: there is no such tool, and
`TOOLS` is the only way to add one.
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from importlib import import_module
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    EmptyResult,
    ListPromptsResult,
    ListToolsResult,
    SubscribeRequestParams,
    TextContent,
    UnsubscribeRequestParams,
)
from pydantic import ConfigDict

from ibkrgw.actors import Actor, ActorKind, Source, correlation_id_var
from ibkrgw.auth import KEYWORD, api_key_from_string, read_budget_spend, read_ident
from ibkrgw.errors import BROKER_AWAY_CODES, ErrorCode, GatewayError, exception_handler
from ibkrgw.limits import check_json
from ibkrgw.models import Scope as KeyScope
from ibkrgw.models import ScopedAPIKey
from ibkrgw.web.mcp import McpPrompt, McpResource, McpTool
from ibkrgw.web.mcp_schema import input_schema

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]
APP_MODULES = ("brokers.mcp_tools", "marketdata.mcp_tools", "orders.mcp_tools", "audit.mcp_tools")
LOCAL_HOSTNAMES = ("127.0.0.1", "localhost", "::1")
# Error details may list candidate contracts; an agent needs a few to choose from, not hundreds.
MAX_ERROR_CANDIDATES = 10
CANDIDATE_KEYS = ("con_id", "symbol", "sec_type", "exchange", "currency", "expiry", "strike", "right", "local_symbol")
WATCH_INTERVAL_S = 0.5
# No resource URI is longer (ibkr://orders/<uuid> is 50): a longer one is unknown, and is echoed only in part.
MAX_RESOURCE_URI = 256
SHOWN_URI = 100

INSTRUCTIONS = """\
Interactive Brokers through ibkr-gateway. Orders pass the same gates as every other door: with the
default settings (paper mode, ORDERS_ENABLED=false) place_order records the order as `simulated` and
nothing is sent to the broker. Before place_order, call preview_order with the same arguments: a dry
run that lists every gate that would refuse the order (with the code place_order would return) and
the commission and margin. Give every order a client_order_id so a retry
replays the original result instead of placing a second order. Prices and quantities are decimal
strings ("189.50"); times are UTC. Lists are bounded: use `limit`/`offset` (see `next_offset`) to
see more. Read ibkr://trading-status for the trading mode, the kill switch and the risk limits,
and subscribe to ibkr://orders/{order_id} to be told when an order changes or fills instead of
polling get_order. This server cannot release the kill switch or change any trading setting; only
the operator can. Errors carry {"error": {"code", "message", "details"}} with the REST error codes."""


def project_version() -> str:
    """The version the project publishes (OpenAPI `info.version`), also shown as MCP serverInfo.version."""
    return str(settings.SPECTACULAR_SETTINGS["VERSION"])


# -- running one call: the one wrapper for actor, correlation id, threads and errors ---------------
def api_key_from_header(value: str | None) -> ScopedAPIKey | None:
    prefix = KEYWORD + " "
    if not value or not value.startswith(prefix):
        return None
    return api_key_from_string(value[len(prefix) :].strip())


def _actor(transport: Transport, headers: Mapping[str, str], correlation_id: str) -> tuple[Actor, ScopedAPIKey | None]:
    """Who is calling, and over HTTP with which API key (401 without a usable one)."""
    if transport == "stdio":
        # The operator started this process on their own machine, as with any management command.
        actor = Actor(kind=ActorKind.MCP, label="mcp:stdio", source=Source.MCP, correlation_id=correlation_id)
        return actor, None
    key = api_key_from_header(headers.get("authorization"))
    if key is None:
        raise GatewayError(ErrorCode.NOT_AUTHENTICATED, "Invalid, expired or revoked API key.", http_status=401)
    label = f"mcp:{key.name} ({key.prefix})"
    actor = Actor(kind=ActorKind.MCP, label=label, source=Source.MCP, correlation_id=correlation_id, key_id=key.pk)
    return actor, key


def _scope_check(key: ScopedAPIKey | None, scope: KeyScope) -> None:
    if key is not None and not key.allows(scope):
        raise GatewayError(
            ErrorCode.PERMISSION_DENIED, f"This tool needs an API key with scope '{scope}'.", http_status=403
        )


def _jsonable(data: Any) -> Any:
    # Serializer `.data` may still hold Decimal, UUID or datetime values (e.g. in JSON fields).
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _bounded_error(payload: dict[str, Any]) -> dict[str, Any]:
    """Error details an agent can read: a few compact candidate contracts, not every match in full."""
    details = payload["error"].get("details")
    if isinstance(details, dict) and isinstance(details.get("candidates"), list):
        candidates = details["candidates"]
        details["candidates"] = [
            {k: c.get(k) for k in CANDIDATE_KEYS if c.get(k) not in (None, "")}
            for c in candidates[:MAX_ERROR_CANDIDATES]
        ]
        details.setdefault("count", len(candidates))
        details["candidates_shown"] = len(details["candidates"])
    return payload


def _broker_cause(payload: dict[str, Any]) -> dict[str, Any]:
    """When the broker is unreachable because IB refused our client id, say so with IB's own words."""
    from brokers import runtime

    current = runtime.current()
    worker = getattr(current, "worker", None)
    if worker is None or getattr(worker, "down_reason", "") != "client_id_in_use":
        return payload
    error = payload["error"]
    error["message"] = (
        f"IB refused this server's client id {worker.client_id}: another connection uses it "
        f"(IB error 326). Stop the other client or give this one another IB_MCP_CLIENT_ID."
    )
    error["details"] = {
        **(error.get("details") or {}),
        "down_reason": "client_id_in_use",
        "client_id": worker.client_id,
    }
    return payload


def _result(payload: Any, correlation_id: str, *, error: bool = False) -> CallToolResult:
    return CallToolResult(
        # Clients that read only text get the same JSON (the protocol recommends both).
        content=[TextContent(type="text", text=json.dumps(payload, separators=(",", ":")))],
        structured_content=payload,
        is_error=error,
        _meta={"correlation_id": correlation_id},
    )


def run_tool(
    tool: McpTool,
    arguments: dict[str, Any],
    *,
    transport: Transport,
    headers: Mapping[str, str],
    refusal: GatewayError | None = None,
) -> CallToolResult:
    """Run one call synchronously (in a worker thread). Never raises: errors become tool errors.

    `refusal`: the call is refused with it before anything runs (a trade tool on a read-only server).
    A trade tool's refusal is audited as REST audits a refused order request (`refusal_audit`)."""
    from orders import services

    correlation_id = uuid.uuid4().hex
    token = correlation_id_var.set(correlation_id)
    close_old_connections()
    actor: Actor | None = None
    try:
        actor, key = _actor(transport, headers, correlation_id)
        if refusal is not None:
            raise refusal
        _scope_check(key, tool.scope)
        if tool.scope == KeyScope.READ:  # as REST's reads (orders have their own limit, in the pipeline)
            read_budget_spend(read_ident(key=key, name=actor.label))
        check_json(arguments)  # depth, surrogates and control characters: the same limits as REST
        data = tool.input(data=arguments)
        data.is_valid(raise_exception=True)
        payload = _jsonable(tool.body(data, actor))
        logger.info("mcp %s by %s: ok", tool.name, actor.label)
        return _result(payload, correlation_id)
    except Exception as exc:
        # The REST handler renders (and logs, when unexpected) every error with the same codes.
        response = exception_handler(exc, {"view": f"mcp:{tool.name}"})
        payload = _bounded_error(_jsonable(response.data))
        if payload["error"]["code"] in BROKER_AWAY_CODES:
            payload = _broker_cause(payload)
        if actor is not None and tool.scope == KeyScope.TRADE:
            services.refusal_audit(
                exc, status=response.status_code, error=payload["error"], actor=actor, action=tool.name, body=arguments
            )
        logger.info("mcp %s: %s", tool.name, payload["error"]["code"])
        return _result(payload, correlation_id, error=True)
    finally:
        close_old_connections()
        correlation_id_var.reset(token)


def _read_only_refusal(name: str) -> GatewayError:
    return GatewayError(
        ErrorCode.PERMISSION_DENIED,
        f"{name} is not offered: this server is read-only.",
        http_status=403,
        details={"tool": name, "read_only": True},
    )


def _no_such_tool(name: str) -> dict[str, Any]:
    shown = name[:64]
    error = GatewayError(ErrorCode.NOT_FOUND, f"No tool named {shown!r}.", http_status=404, details={"tool": shown})
    return error.as_dict()


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
    # A schema without a model: advertised to clients (which validate answers against it).
    metadata = FuncMetadata(arg_model=_RawArguments, output_schema=tool.output_schema)
    return sdk_tool.model_copy(update={"parameters": input_schema(tool.input), "fn_metadata": metadata})


def key_lookup(header: str | None) -> ScopedAPIKey | None:
    close_old_connections()
    try:
        return api_key_from_header(header)
    finally:
        close_old_connections()


# -- resources: read, and told when they change ------------------------------------------------------
def _read_resource(resource: McpResource, params: dict[str, str]) -> str:
    close_old_connections()
    try:
        return json.dumps(resource.read(**params), cls=DjangoJSONEncoder)
    except GatewayError as exc:
        raise MCPError(code=INVALID_PARAMS, message=exc.message, data=exc.as_dict()) from None
    finally:
        close_old_connections()


def _shown_uri(uri: str) -> str:
    return uri if len(uri) <= SHOWN_URI else uri[:SHOWN_URI] + "…"


def _unknown_uri(uri: str, message: str) -> MCPError:
    """An unknown resource URI, told back in part: a client sending 100 KB is not answered 100 KB."""
    shown = _shown_uri(uri)
    return MCPError(code=INVALID_PARAMS, message=message.format(uri=shown), data={"uri": shown, "uri_length": len(uri)})


def _add_resource(server: MCPServer, resource: McpResource) -> None:
    params = [p for p in inspect.signature(resource.read).parameters]

    async def read(**kwargs: str) -> str:
        return await anyio.to_thread.run_sync(partial(_read_resource, resource, kwargs))

    # The SDK matches template variables against the function's parameters.
    read.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str) for name in params]
    )
    read.__annotations__ = {**dict.fromkeys(params, str), "return": str}
    server.resource(resource.uri, name=resource.name, description=resource.description, mime_type="application/json")(
        read
    )


@dataclass
class ResourceWatch:
    """Who subscribed to which resource URI, and a poll of the ledger that tells them of changes.

    Polling the database (not in-process events) also sees orders changed by other processes: the
    web server's recorder, the admin, another MCP server. Each interval costs a few indexed queries
    (order events, fills and kill-switch rows after the last seen id).
    """

    changed: Callable[[dict[str, Any]], set[str]]
    subscribers: dict[str, set[Any]] = field(default_factory=dict)  # resources/subscribe sessions, by URI
    state: dict[str, Any] = field(default_factory=dict)
    server: MCPServer | None = None

    def subscribe(self, uri: str, session: Any) -> None:
        self.subscribers.setdefault(uri, set()).add(session)

    def unsubscribe(self, uri: str, session: Any) -> None:
        self.subscribers.get(uri, set()).discard(session)
        if not self.subscribers.get(uri):
            self.subscribers.pop(uri, None)

    def _poll(self) -> set[str]:
        close_old_connections()
        try:
            return self.changed(self.state)
        finally:
            close_old_connections()

    async def notify(self, uri: str) -> None:
        for session in list(self.subscribers.get(uri, ())):
            try:
                await session.send_resource_updated(uri)
            except Exception:  # the client went away: forget it
                self.unsubscribe(uri, session)
        if self.server is not None:
            # Clients on the newest protocol listen with subscriptions/listen, and each listen stream keeps
            # the events of the URIs it asked for. The SDK offers its bus to tool handlers only
            # (ctx.notify_resource_updated), so publish on it directly.
            await self.server._subscriptions.publish(ResourceUpdated(uri=uri))

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """Poll every WATCH_INTERVAL_S. Started with `TaskGroup.start`, it is ready once its first poll has
        noted where the ledger is: a change made after the server answers anything is always notified."""
        await self._poll_once()
        task_status.started()
        while True:
            await anyio.sleep(WATCH_INTERVAL_S)
            await self._poll_once()

    async def _poll_once(self) -> None:
        # Polled with no subscriber too: a change right after a subscription must not be taken as the baseline.
        # Every changed URI is published: which listen streams want it is known to the SDK's listen handler only.
        try:
            changed = await anyio.to_thread.run_sync(self._poll)
        except Exception:
            logger.exception("mcp: resource watch failed")
            return
        for uri in sorted(changed):
            await self.notify(uri)


def _with_fresh_connection(fn: Callable[..., Any], *args: Any) -> Any:
    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()


def _install_subscriptions(server: MCPServer, watch: ResourceWatch, known: Callable[[str], bool]) -> None:
    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        if len(uri) > MAX_RESOURCE_URI or not await anyio.to_thread.run_sync(_with_fresh_connection, known, uri):
            raise _unknown_uri(uri, "No resource {uri} to subscribe to.")
        watch.subscribe(uri, ctx.session)
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        watch.unsubscribe(str(params.uri), ctx.session)
        return EmptyResult()

    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def _add_prompt(server: MCPServer, prompt: McpPrompt) -> None:
    server.prompt(name=prompt.name, title=prompt.title, description=prompt.description)(prompt.render)


def prompt_arguments(prompt: McpPrompt, arguments: dict[str, Any]) -> dict[str, str]:
    """The arguments `prompt.render` gets: accepted by the prompt's input serializer, as text. A missing,
    unknown or bad argument raises the error a bad resource read raises (invalid params, REST's body)."""
    try:
        check_json(arguments)
        data = prompt.input(data=arguments)
        data.is_valid(raise_exception=True)
    except Exception as exc:
        payload = _jsonable(exception_handler(exc, {"view": f"mcp:prompt:{prompt.name}"}).data)
        logger.info("mcp prompt %s: %s", prompt.name, payload["error"]["code"])
        raise MCPError(code=INVALID_PARAMS, message=payload["error"]["message"], data=payload) from None
    return {name: _prompt_text(value) for name, value in data.validated_data.items()}


def _prompt_text(value: Any) -> str:
    # Decimals as plain numbers ("410.5", not "410.50000000" or "1E+1"), as the tools answer them.
    return format(value.normalize(), "f") if isinstance(value, Decimal) else str(value)


@dataclass
class Registry:
    tools: list[McpTool] = field(default_factory=list)
    resources: list[McpResource] = field(default_factory=list)
    prompts: list[McpPrompt] = field(default_factory=list)
    watchers: list[Callable[[dict[str, Any]], set[str]]] = field(default_factory=list)
    known_uris: list[Callable[[str], bool]] = field(default_factory=list)


def collect(*, read_only: bool = False) -> Registry:
    """Every app's tools, resources and prompts; a tool name used twice fails loudly.

    In read-only mode the tools (and prompts) that place, change or cancel orders are left out.
    """
    registry = Registry()
    for path in APP_MODULES:
        module = import_module(path)
        registry.tools.extend(module.TOOLS)
        registry.resources.extend(getattr(module, "RESOURCES", []))
        registry.prompts.extend(getattr(module, "PROMPTS", []))
        if hasattr(module, "resources_changed"):
            registry.watchers.append(module.resources_changed)
            registry.known_uris.append(module.resource_known)
    names = [tool.name for tool in registry.tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuntimeError(f"MCP tools registered twice: {duplicates}")
    if read_only:
        registry.tools = [t for t in registry.tools if t.scope == KeyScope.READ]
        registry.prompts = [p for p in registry.prompts if not p.trade]
    return registry


def _changed_any(watchers: list[Callable[[dict[str, Any]], set[str]]]):
    def changed(state: dict[str, Any]) -> set[str]:
        found: set[str] = set()
        for index, watcher in enumerate(watchers):
            found |= watcher(state.setdefault(str(index), {}))
        return found

    return changed


class GatewayMCPServer(MCPServer):
    gateway_tools: dict[str, McpTool]
    gateway_prompts: dict[str, McpPrompt]
    withheld_tools: dict[str, McpTool]  # trade tools left out in read-only mode
    transport: Transport
    watch: ResourceWatch

    async def _handle_call_tool(self, ctx: Any, params: Any) -> Any:
        """A tool that is not offered answers in the error shape of every other tool error, not SDK text."""
        if params.name in self.gateway_tools:
            return await super()._handle_call_tool(ctx, params)
        withheld = self.withheld_tools.get(params.name)
        if withheld is None:
            return _result(_no_such_tool(params.name), uuid.uuid4().hex, error=True)
        # Refused, and audited as any other refused order request.
        headers = dict(getattr(ctx.request, "headers", None) or {}) if self.transport == "http" else {}
        call = partial(
            run_tool,
            withheld,
            dict(params.arguments or {}),
            transport=self.transport,
            headers=headers,
            refusal=_read_only_refusal(withheld.name),
        )
        return await anyio.to_thread.run_sync(call)

    async def _handle_read_resource(self, ctx: Any, params: Any) -> Any:
        """A URI longer than any resource's is unknown, and the answer (and the log) carries only its start."""
        uri = str(params.uri)
        if len(uri) > MAX_RESOURCE_URI:
            logger.info("mcp: unknown resource %r (%d characters)", _shown_uri(uri), len(uri))
            raise _unknown_uri(uri, "Unknown resource: {uri}")
        return await super()._handle_read_resource(ctx, params)

    async def _handle_get_prompt(self, ctx: Any, params: Any) -> Any:
        """Arguments are checked before the SDK sees them, so a missing one is refused like a bad one. Over HTTP a
        trade prompt is, for a key without scope trade, a prompt that does not exist (as prompts/list says)."""
        prompt = self.gateway_prompts.get(params.name)
        if prompt is not None and prompt.trade and self.transport == "http":
            key = await self._caller_key(ctx)
            if key is None or not key.allows(KeyScope.TRADE):
                raise ValueError(f"Unknown prompt: {params.name}")  # the SDK's words for a prompt it does not have
        if prompt is not None:
            params = params.model_copy(update={"arguments": prompt_arguments(prompt, params.arguments or {})})
        return await super()._handle_get_prompt(ctx, params)

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        """Over HTTP, only the tools the caller's API key may call (a read key sees no trade tool)."""
        result = await super()._handle_list_tools(ctx, params)
        if self.transport != "http":
            return result
        key = await self._caller_key(ctx)
        allowed = [t for t in result.tools if key is not None and key.allows(self.gateway_tools[t.name].scope)]
        return ListToolsResult(tools=allowed)

    async def _handle_list_prompts(self, ctx: Any, params: Any) -> ListPromptsResult:
        """Over HTTP, a read key is not offered the prompts that walk an agent through trading either."""
        result = await super()._handle_list_prompts(ctx, params)
        if self.transport != "http":
            return result
        key = await self._caller_key(ctx)
        trades = key is not None and key.allows(KeyScope.TRADE)
        allowed = [p for p in result.prompts if trades or not self.gateway_prompts[p.name].trade]
        return ListPromptsResult(prompts=allowed)

    @staticmethod
    async def _caller_key(ctx: Any) -> ScopedAPIKey | None:
        """The API key of the HTTP request behind `ctx`, looked up again (a revoked key counts at once)."""
        headers = getattr(ctx.request, "headers", None) or {}
        return await anyio.to_thread.run_sync(key_lookup, headers.get("authorization"))


def build_server(*, transport: Transport = "stdio", read_only: bool = False) -> GatewayMCPServer:
    registry = collect(read_only=read_only)
    server = GatewayMCPServer(
        name="ibkr-gateway",
        version=project_version(),
        instructions=INSTRUCTIONS
        + (
            "\nThis server is read-only: it offers no tool that places, changes or cancels orders." if read_only else ""
        ),
        tools=[_sdk_tool(tool, transport) for tool in registry.tools],
    )
    server.gateway_tools = {tool.name: tool for tool in registry.tools}
    server.withheld_tools = {tool.name: tool for tool in collect().tools if tool.name not in server.gateway_tools}
    server.gateway_prompts = {prompt.name: prompt for prompt in registry.prompts}
    server.transport = transport
    for resource in registry.resources:
        _add_resource(server, resource)
    for prompt in registry.prompts:
        _add_prompt(server, prompt)
    server.watch = ResourceWatch(changed=_changed_any(registry.watchers), server=server)
    _install_subscriptions(server, server.watch, lambda uri: any(known(uri) for known in registry.known_uris))
    return server
