"""How the MCP server is reached: stdio, or streamable HTTP behind the Origin and API-key checks.

Both serve until SIGTERM/SIGINT (signal -> flag -> bounded shutdown), alongside the resource watch
that tells subscribers of changes (`ibkrgw.mcp_server.ResourceWatch`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ibkrgw.auth import KEYWORD
from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.limits import ChunkedBodyLimit, KeysOnce, duplicate_key, max_body_bytes, too_large
from ibkrgw.mcp_server import LOCAL_HOSTNAMES, GatewayMCPServer, key_lookup
from ibkrgw.models import ScopedAPIKey

logger = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 5
# How long calls in flight when the client closes stdin get to finish and be answered (IB's own timeouts bound them).
STDIN_CLOSED_GRACE_S = 60


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


class HttpGuard:
    """ASGI wrapper: 403 for a foreign `Origin`, 401 without a valid `Authorization: Api-Key <key>`.

    413 for a body over REQUEST_MAX_BODY_BYTES by its Content-Length (`ChunkedBodyLimit`, outside it, bounds
    bodies that declare none). The scope of the key is checked per tool call (read
    for reads, trade for tools that change orders), and `tools/list` follows it. A session belongs to
    the key that opened it (`_session_owner`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        length = headers.get("content-length", "0")  # without one, ChunkedBodyLimit has bounded the body
        if not length.isdigit() or int(length) > max_body_bytes():
            response = JSONResponse(too_large(None, max_body_bytes()).as_dict(), 413)
        elif origin is not None and not origin_allowed(origin):
            logger.warning("mcp http: refused Origin %r", origin)
            response = _refuse(ErrorCode.PERMISSION_DENIED, "This Origin is not allowed.", 403)
        elif (key := await anyio.to_thread.run_sync(key_lookup, headers.get("authorization"))) is None:
            response = _refuse(
                ErrorCode.NOT_AUTHENTICATED,
                "An API key is required: Authorization: Api-Key <key>.",
                401,
                headers={"WWW-Authenticate": KEYWORD},
            )
        elif scope.get("method") == "GET" and "last-event-id" in headers:
            # No event history is kept, so a stream cannot be resumed (the SDK would answer nothing at all).
            response = _refuse(
                ErrorCode.INVALID_REQUEST,
                "Resuming a stream (Last-Event-ID) is not supported: open a new GET stream without it.",
                400,
            )
        else:
            await self.app({**scope, "user": _session_owner(key)}, receive, send)
            return
        await response(scope, receive, send)


# Parsers disagree on which of two values counts (the SDK's takes the last): refused, as at every door.
DUPLICATE_KEY_MESSAGE = "An object in the message names one key twice; give each key once."


def _jsonrpc_refusal(request_id: Any, message: str) -> JSONResponse:
    # The shape of the SDK's own transport errors (400, a JSON-RPC error), with the id when it is usable.
    error = {"code": INVALID_REQUEST, "message": message}
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, 400)


class RequestIds:
    """ASGI wrapper (inside `HttpGuard`): within a session, a request's id must be a string or an integer, and not
    the id of a request of that session still in flight; otherwise 400 with a JSON-RPC error, before anything runs.

    The SDK routes each answer to its POST by the request id (as text): a second request with the id of one in
    flight took over its answer stream, so neither POST was ever answered while both calls ran (two orders
    placed); an id such as `true`, `1.5` or `null` made the request a notification, dropped with 202."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight: set[tuple[str, str, str]] = set()  # (API key, session, request id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = Headers(scope=scope).get("mcp-session-id") if scope["type"] == "http" else None
        if session is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:  # HttpGuard (declared length) and ChunkedBodyLimit (chunked) have bounded the body
            messages.append(await receive())
            if messages[-1]["type"] != "http.request" or not messages[-1].get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        keys = KeysOnce()
        try:
            request = json.loads(b"".join(m.get("body", b"") for m in messages), object_pairs_hook=keys)
        except (ValueError, RecursionError):
            request = None  # the SDK answers a parse error
        if request is not None and keys.duplicate is not None:
            request_id = _usable_id(request.get("id")) if isinstance(request, dict) else None
            await _jsonrpc_refusal(request_id, DUPLICATE_KEY_MESSAGE)(scope, replay, send)
            return
        key = None
        if isinstance(request, dict) and isinstance(request.get("method"), str) and "id" in request:
            request_id = request["id"]
            if isinstance(request_id, bool) or not isinstance(request_id, str | int):
                await _jsonrpc_refusal(None, "A request id must be a string or an integer.")(scope, replay, send)
                return
            key = (scope["user"].access_token.client_id, session, str(request_id))
            if key in self.in_flight:
                message = (
                    f"Request id {str(request_id)[:64]!r} is already in use by a request in flight in this session."
                )
                await _jsonrpc_refusal(request_id, message)(scope, replay, send)
                return
            self.in_flight.add(key)
        try:
            await self.app(scope, replay, send)
        finally:
            if key is not None:
                self.in_flight.discard(key)


def _session_owner(key: ScopedAPIKey) -> AuthenticatedUser:
    """The SDK binds each session to the credential that opened it: a request with another API key for that
    session id is answered 404 (as for an unknown session), so one key can neither use, listen to nor end
    another key's session."""
    return AuthenticatedUser(AccessToken(token=key.prefix, client_id=f"api-key:{key.pk}", scopes=[key.scope]))


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
    return ChunkedBodyLimit(HttpGuard(RequestIds(server.streamable_http_app(host=host, transport_security=security))))


# -- serving, with signal -> flag -> bounded shutdown ------------------------------------------------
class _DaemonStdin:
    """stdin lines for the stdio transport, read by a daemon thread.

    The SDK reads stdin in an anyio worker thread that cancellation cannot interrupt, so SIGTERM
    would wait for the client's next message. A daemon reader never holds up shutdown.
    """

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[str](16)
        self._reader: threading.Thread | None = None
        self.last_line = ""  # the line handed out last (the one the SDK is reading, or could not read)

    def __aiter__(self) -> _DaemonStdin:
        return self

    async def __anext__(self) -> str:
        if self._reader is None:
            token = anyio.lowlevel.current_token()
            self._reader = threading.Thread(target=self._pump, args=(token,), name="mcp-stdin", daemon=True)
            self._reader.start()
        try:
            self.last_line = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        return self.last_line

    def _pump(self, token: anyio.lowlevel.EventLoopToken) -> None:
        try:
            with open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False) as wire:
                while line := wire.readline():
                    anyio.from_thread.run(self._send.send, line, token=token)
            anyio.from_thread.run(self._send.aclose, token=token)
        except (RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the event loop is gone or stopped listening: we are shutting down


async def _stop_on_signal(stop: Callable[[], None]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("mcp: %s received, shutting down", signal.Signals(signum).name)
            stop()
            return


def _usable_id(request_id: Any) -> RequestId | None:
    """The id to answer with: a string or an integer as given, else null (JSON-RPC's "could not be determined")."""
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return request_id
    if isinstance(request_id, str):
        try:
            request_id.encode("utf-8")  # a lone surrogate cannot be written back
        except UnicodeEncodeError:
            return None
        return request_id
    return None


def unreadable_line_answer(line: str) -> JSONRPCError | None:
    """The JSON-RPC error for a stdin line the SDK could not read as a message; None when no answer is due.

    Not JSON: a parse error with a null id. Text that is not valid Unicode (an escaped lone surrogate, in a
    tool's arguments or anywhere else): a parse error too, as the HTTP transport answers it, but with the
    request's own id when it has a usable one. Any other JSON that is not a valid message (a malformed
    envelope): an invalid request, with its id likewise. A notification, or the client's answer to a request
    of ours, is never answered. Without this a request the SDK could not read got no answer at all, and the
    client waited for ever."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return JSONRPCError(
            jsonrpc="2.0", id=None, error=ErrorData(code=PARSE_ERROR, message="Parse error: the message is not JSON.")
        )
    request_id = None
    if isinstance(message, dict):
        if "method" in message and "id" not in message:
            return None  # a notification
        if "method" not in message and ("result" in message or "error" in message):
            return None  # the client's answer to a request of the server's
        request_id = _usable_id(message.get("id"))
    code, text = INVALID_REQUEST, "Invalid request: not a valid JSON-RPC message."
    try:
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        code, text = PARSE_ERROR, "Parse error: the message holds text that is not valid Unicode (a lone surrogate)."
    except (ValueError, RecursionError):
        pass  # too deep to write out again: whatever it holds, it is not a valid message
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=text))


class _Unanswered:
    """The client's requests the server has not answered yet, counted by id (a reused id counts twice)."""

    def __init__(self) -> None:
        self.ids: Counter[RequestId] = Counter()
        self.settled = anyio.Event()
        self.settled.set()

    def asked(self, message: JSONRPCMessage) -> None:
        # A subscriptions/listen stream lasts until the client ends it: nothing to wait for.
        if isinstance(message, JSONRPCRequest) and message.method != "subscriptions/listen":
            self.ids[coerce_request_id(message.id)] += 1
            if self.settled.is_set():
                self.settled = anyio.Event()
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            # The client gave up on that request: it is not answered.
            self._done((message.params or {}).get("requestId"))

    def answered(self, message: JSONRPCMessage) -> None:
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            self._done(message.id)

    def _done(self, request_id: Any) -> None:
        if isinstance(request_id, str | int) and self.ids[key := coerce_request_id(request_id)] > 0:
            self.ids[key] -= 1
            if not self.ids[key]:
                del self.ids[key]
        if not self.ids:
            self.settled.set()


async def serve_stdio(server: GatewayMCPServer) -> None:
    """Serve until stdin closes or SIGTERM/SIGINT.

    As the SDK's `run_stdio_async`, with a stdin that cannot block shutdown; stdout stays the SDK's. When stdin
    closes (a pipe's end, or a client shutting down as the protocol prescribes), the calls in flight still
    finish and are answered, for up to STDIN_CLOSED_GRACE_S, before the server stops: the SDK alone would cancel
    them and answer "Connection closed", while an order they placed stays placed. A signal stops at once."""
    lowlevel = server._lowlevel_server
    unanswered = _Unanswered()
    requests, requests_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    answers_in, answers = anyio.create_memory_object_stream[SessionMessage](0)

    async def relay_requests(stdin: Any, lines: _DaemonStdin, stdout: Any) -> None:
        try:
            async with requests:
                async for message in stdin:
                    if isinstance(message, Exception):
                        # The SDK could not read the line it took last (it waits for this relay before reading
                        # another): answer it here, as the SDK's server would leave it unanswered.
                        answer = unreadable_line_answer(lines.last_line)
                        logger.info("mcp: unreadable message (%s)", "answered" if answer else "a notification")
                        if answer is not None:
                            await stdout.send(SessionMessage(answer))
                        continue
                    if duplicate_key(lines.last_line) is not None:
                        logger.info("mcp: a message naming one key twice was refused")
                        if isinstance(message.message, JSONRPCRequest):  # nothing else is ever answered
                            error = ErrorData(code=INVALID_REQUEST, message=DUPLICATE_KEY_MESSAGE)
                            refusal = JSONRPCError(jsonrpc="2.0", id=message.message.id, error=error)
                            await stdout.send(SessionMessage(refusal))
                        continue
                    unanswered.asked(message.message)
                    await requests.send(message)
                with anyio.move_on_after(STDIN_CLOSED_GRACE_S):
                    await unanswered.settled.wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the server stopped reading

    async def relay_answers(stdout: Any) -> None:
        async with stdout, answers:
            async for message in answers:
                unanswered.answered(message.message)
                await stdout.send(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, tg.cancel_scope.cancel)
        await tg.start(server.watch.run)  # the ledger's baseline before the first request
        lines = _DaemonStdin()
        async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
            async with anyio.create_task_group() as relays:
                relays.start_soon(relay_requests, read_stream, lines, write_stream)
                relays.start_soon(relay_answers, write_stream)
                try:
                    await lowlevel.run(requests_out, answers_in, lowlevel.create_initialization_options())
                finally:
                    answers_in.close()  # relay_answers ends once the last answer is written
                    requests_out.close()
        tg.cancel_scope.cancel()  # the client closed stdin


async def serve_http(server: GatewayMCPServer, *, host: str, port: int) -> None:
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
        await tg.start(server.watch.run)  # the ledger's baseline before the first request
        await uv.serve()
        tg.cancel_scope.cancel()
