"""Shared pieces of the websocket door: close codes, frames, auth re-checks, per-client outboxes.

Close codes (the websocket close frame; an `{"type": "error", ...}` frame explains each first):

- 4401 not authenticated: no valid API key or session at connect, or it stopped being valid since:
  the key revoked or expired; the session logged out, flushed or expired, its user deactivated or
  their password changed (checked at the client's messages and every AUTH_RECHECK_S while it only
  listens);
- 4403 authenticated, but the key or user lacks the scope the stream needs;
- 4400 the connect URL asks for what the stream cannot do (orders: a bad `?after_seq=`);
- 4404 there is no stream at that path (`NoSuchStream`);
- 1011 the server failed while opening the stream (an `internal_error` frame first);
- 4008 the client stayed behind: one frame could not be handed to it within `max_send_s`, or its
  ordered backlog (orders stream) overflowed.

Threads: everything here runs on the ASGI event loop. Producers on other threads (the IB worker,
the recorder, request threads) reach it through `LoopHubs` and `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, NotRequired, TypedDict, TypeVar

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder

from ibkrgw import limits, metrics
from ibkrgw.auth import api_key_changes, principal_allows, session_signs_in
from ibkrgw.errors import ErrorCode, GatewayError
from ibkrgw.models import Scope, ScopedAPIKey

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_PERMISSION_DENIED = 4403
CLOSE_INVALID_REQUEST = 4400
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4008
CLOSE_INTERNAL_ERROR = 1011  # the server failed while opening the stream (an `internal_error` frame first)
CLIENT_TOO_SLOW = ErrorCode.CLIENT_TOO_SLOW

MAX_MESSAGE_BYTES = 64 * 1024
AUTH_RECHECK_S = 30.0  # how stale our view of a key's revocation or a session's end may get


class ErrorFrame(TypedDict):
    type: str  # "error"
    code: str
    message: str
    details: dict[str, Any]


class PongFrame(TypedDict):
    type: str  # "pong"
    id: NotRequired[Any]


def error_frame(code: str, message: str, details: dict[str, Any] | None = None) -> ErrorFrame:
    return {"type": "error", "code": str(code), "message": message, "details": details or {}}


def invalid(message: str, **details: Any) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, details=details)


def dumps(frame: Any) -> str:
    # Strict JSON only: a client's parser must never meet Infinity or NaN.
    return json.dumps(frame, cls=DjangoJSONEncoder, separators=(",", ":"), allow_nan=False)


def shared_channel_layer() -> bool:
    """True when groups reach other processes (CHANNEL_LAYER_URL=redis://...), not the in-memory layer."""
    layer = get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


# -- one hub per ASGI event loop -------------------------------------------------------------
H = TypeVar("H")


class LoopHubs(Generic[H]):
    """One hub per running event loop: a daphne process has one loop; each async test has its own.

    `get()` runs on the loop; `all()` may be called from any thread (producers) and skips hubs
    whose loop has closed.
    """

    def __init__(self, factory: Callable[[asyncio.AbstractEventLoop], H]) -> None:
        self._factory = factory
        self._hubs: dict[asyncio.AbstractEventLoop, H] = {}
        self._lock = threading.Lock()

    def get(self) -> H:
        loop = asyncio.get_running_loop()
        with self._lock:
            hub = self._hubs.get(loop)
            if hub is None:
                for old in [old for old in self._hubs if old.is_closed()]:
                    del self._hubs[old]
                hub = self._hubs[loop] = self._factory(loop)
            return hub

    def all(self) -> list[H]:
        with self._lock:
            return [hub for loop, hub in self._hubs.items() if not loop.is_closed()]


# -- per-client outboxes ------------------------------------------------------------------------
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LatestOutbox(Generic[K, V]):
    """Latest value per key, sent by one task: a slow reader gets fewer, fresher frames.

    `offer()` never blocks and replaces an unsent value for the same key, so the backlog is at most
    one value per key. When one `send` does not finish within `max_send_s`, `on_stalled` is
    awaited and the outbox stops (without `on_stalled` it just keeps waiting).
    """

    def __init__(
        self,
        send: Callable[[K, V], Awaitable[None]],
        *,
        max_send_s: float | None = None,
        on_stalled: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._send, self._max_send_s, self._on_stalled = send, max_send_s, on_stalled
        self._latest: dict[K, V] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, key: K, value: V) -> None:
        self._latest.pop(key, None)  # re-insert: keys are sent in the order their latest value came
        self._latest[key] = value
        self._wake.set()

    def discard(self, key: K) -> None:
        self._latest.pop(key, None)

    async def aclose(self) -> None:
        self._closed = True  # closed from its own task (its client gone mid-send): it ends after that send
        await _stop(self._task)

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._latest and not self._closed:
                key = next(iter(self._latest))
                value = self._latest.pop(key)
                if not await _bounded_send(self._send(key, value), self._max_send_s):
                    if self._on_stalled is not None:
                        await self._on_stalled()
                        return


class OrderedOutbox(Generic[V]):
    """Every value, in order, sent by one task; the backlog is bounded by `max_backlog`.

    `offer()` never blocks: it returns False when the backlog is full (the caller disconnects the
    client, which would otherwise miss events). `put()` waits for room (replays use it).
    """

    def __init__(
        self,
        send: Callable[[V], Awaitable[None]],
        *,
        max_backlog: int,
        max_send_s: float | None,
        on_stalled: Callable[[], Awaitable[None]],
    ) -> None:
        self._send, self._max_send_s, self._on_stalled = send, max_send_s, on_stalled
        self._queue: asyncio.Queue[V] = asyncio.Queue(max_backlog)
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, value: V) -> bool:
        try:
            self._queue.put_nowait(value)
        except asyncio.QueueFull:
            return False
        return True

    async def put(self, value: V) -> None:
        await self._queue.put(value)

    async def aclose(self) -> None:
        self._closed = True  # as LatestOutbox.aclose
        await _stop(self._task)

    async def _run(self) -> None:
        while not self._closed:
            value = await self._queue.get()
            if not await _bounded_send(self._send(value), self._max_send_s):
                await self._on_stalled()
                return


def cancelling() -> bool:
    """True while the current task is being cancelled. Check it in `except Exception` around Redis calls:
    redis-py can turn a cancellation into its own TimeoutError, and swallowing that would hang shutdown."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _stop(task: asyncio.Task) -> None:
    # The sender task itself closes the outbox when it gives up on a slow client: let it finish.
    if task is asyncio.current_task():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:  # it died of a bug: what its owner releases after stopping it must still be released
        logger.exception("websocket: a sender task had failed")


async def _bounded_send(send: Awaitable[None], limit: float | None) -> bool:
    """Await `send`; False when it did not finish within `limit` seconds (it is then cancelled)."""
    if limit is None:
        await send
        return True
    try:
        async with asyncio.timeout(limit):  # not wait_for: on 3.11 it can swallow a cancellation
            await send
    except TimeoutError:
        return False
    return True


# -- the base consumer ------------------------------------------------------------------------
class StreamConsumer(AsyncWebsocketConsumer):
    """A JSON stream that authenticates on connect, re-checks on every message and routes actions.

    Subclasses set `stream` (metrics label), `actions` and implement `action_<name>(message)`,
    `opened()` and `closed()`. Handlers raise GatewayError; it becomes an error frame and the
    socket stays open.
    """

    stream = ""
    required_scope = Scope.READ
    actions: tuple[str, ...] = ("ping",)
    max_send_s = 10.0  # a client whose socket takes longer than this to accept one frame is dropped

    async def connect(self) -> None:
        self._open = False
        self._auth_checked_at = time.monotonic()
        self._key_changes = api_key_changes()
        await self.accept()
        denial = self._denial()
        if denial is not None:
            await self._refuse(*denial)
            return
        self._credential = Credential.of(self.scope)
        self._open = True
        self._main_task = asyncio.current_task()
        metrics.WEBSOCKET_CLIENTS.labels(stream=self.stream).inc()
        # Streams are mostly listened to, not talked to: a key revoked or a session ended while its
        # client stays silent must end the stream too, not only at the client's next message.
        self._auth_watch = asyncio.get_running_loop().create_task(self._watch_credential())
        try:
            await self.opened()
        except GatewayError as exc:
            # The connect URL asked for what the stream cannot do: end it first (nothing of it goes out), then say why.
            await self._end(CLOSE_INVALID_REQUEST, error_frame(exc.code, exc.message, exc.details))
        except Exception:
            # A bug (or a database failing) while opening: the client is told, not left with a socket that dies.
            logger.exception("websocket %s: unhandled error while opening the stream", self.stream)
            await self._end(CLOSE_INTERNAL_ERROR, error_frame(ErrorCode.INTERNAL_ERROR, "Internal error.", {}))

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch closes stale database connections (a thread hop) before every message;
        # our handlers reach the database only through database_sync_to_async, which does that itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        await self._teardown()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self._open:
            return
        if not await self._still_allowed():
            logger.info("websocket %s: %s is no longer valid; closing", self.stream, self._credential.label)
            await self._refuse(CLOSE_NOT_AUTHENTICATED, ErrorCode.NOT_AUTHENTICATED, self._credential.ended)
            return
        try:
            message = self._parse(text_data, bytes_data)
            await getattr(self, f"action_{message['action']}")(message)
        except GatewayError as exc:
            await self.send_frame(error_frame(exc.code, exc.message, exc.details))
        except Exception:
            # A bug must not close every client's socket with 1011: report it, keep the socket open.
            logger.exception("websocket %s: unhandled error in a client message", self.stream)
            await self.send_frame(error_frame(ErrorCode.INTERNAL_ERROR, "Internal error.", {}))

    async def action_ping(self, message: dict[str, Any]) -> None:
        pong: PongFrame = {"type": "pong"}
        if "id" in message:
            # Frames parse fractions as Decimal (exact quantities); an id of 1.5 still comes back a number.
            pong["id"] = float(message["id"]) if isinstance(message["id"], Decimal) else message["id"]
        await self.send_frame(pong)

    async def send_frame(self, frame: Any) -> None:
        await self.send(text_data=dumps(frame))

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except OSError:
            # The client went away while it was being answered (uvicorn: ClientDisconnected). Release it now,
            # as its disconnect would: raised on, this would end the consumer before its disconnect is read.
            await self._teardown()

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        with contextlib.suppress(OSError):  # already gone: nothing to close
            await super().close(code=code, reason=reason)

    # -- hooks --------------------------------------------------------------------------------
    async def opened(self) -> None:
        """Set up after a successful, authenticated accept. A GatewayError closes the socket with 4400
        (after its error frame); `closed()` is still called."""

    async def closed(self) -> None:
        """Release everything `opened()` and the actions took; called once."""

    # -- internals ----------------------------------------------------------------------------
    def _parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        # Size, UTF-8, JSON depth and string content are held to the same limits as REST bodies.
        message = limits.loads(text_data if text_data is not None else (bytes_data or b""), max_bytes=MAX_MESSAGE_BYTES)
        if not isinstance(message, dict) or not isinstance(message.get("action"), str):
            raise invalid('Send a JSON object with an "action".', actions=list(self.actions))
        if message["action"] not in self.actions:
            raise invalid(f"Unknown action {message['action'][:40]!r}.", actions=list(self.actions))
        return message

    def _denial(self) -> tuple[int, ErrorCode, str] | None:
        user, key = self.scope.get("user"), self.scope.get("api_key")
        if principal_allows(user, key, self.required_scope):
            return None
        if key is not None or (user is not None and user.is_authenticated):
            return CLOSE_PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED, f"Needs scope {self.required_scope}."
        return (
            CLOSE_NOT_AUTHENTICATED,
            ErrorCode.NOT_AUTHENTICATED,
            "Send 'Authorization: Api-Key <key>' (or ?api_key=) or sign in.",
        )

    async def _still_allowed(self) -> bool:
        """Cheap re-check on every message (as Paperless' StatusConsumer does); whether the key or the
        session is still valid is read from the database at most every AUTH_RECHECK_S, and at once after a
        key changed in this process (a revocation here refuses the very next message)."""
        if self._denial() is not None:
            return False
        key = self.scope.get("api_key")
        key_changed = key is not None and api_key_changes() != self._key_changes
        if not key_changed and time.monotonic() - self._auth_checked_at < AUTH_RECHECK_S:
            return not (key is not None and key.has_expired)
        self._auth_checked_at = time.monotonic()
        self._key_changes = api_key_changes()  # before the read: a change during it is read again next time
        return await database_sync_to_async(_credential_valid)(self._credential)

    async def _refuse(self, close_code: int, code: ErrorCode, message: str) -> None:
        await self.send_frame(error_frame(code, message))
        await self.close(code=close_code)
        await self._teardown()

    async def refuse_internal_error(self) -> None:
        """Before the stream opened, the server failed: accept, an `internal_error` frame, close 1011."""
        await self.accept()
        await self.send_frame(error_frame(ErrorCode.INTERNAL_ERROR, "Internal error.", {}))
        await self.close(code=CLOSE_INTERNAL_ERROR)

    async def drop_slow_client(self) -> None:
        """Disconnect a client that stays behind: a reason frame (best effort), close 4008, end the consumer."""
        frame = error_frame(
            CLIENT_TOO_SLOW,
            "The client did not read its frames fast enough and is disconnected.",
            {"max_send_s": self.max_send_s},
        )
        await self._end(CLOSE_TOO_SLOW, frame)

    async def _end(self, close_code: int, frame: ErrorFrame) -> None:
        """Close from outside the client's own messages: a reason frame and the close (best effort, its
        sends may be stuck), then end the consumer, which may be waiting on one of those sends."""
        if not self._open:
            return
        await self._teardown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.send_frame(frame)
                await self.close(code=close_code)
        task = getattr(self, "_main_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _watch_credential(self) -> None:
        credential = self._credential
        while True:
            await asyncio.sleep(AUTH_RECHECK_S)
            try:
                valid = await database_sync_to_async(_credential_valid, thread_sensitive=False)(credential)
            except Exception:  # the database is away: keep the stream, ask again next time
                logger.warning("websocket %s: could not re-check %s", self.stream, credential.label, exc_info=True)
                continue
            self._auth_checked_at = time.monotonic()
            if not valid:
                logger.info("websocket %s: %s is no longer valid; closing", self.stream, credential.label)
                await self._end(CLOSE_NOT_AUTHENTICATED, error_frame(ErrorCode.NOT_AUTHENTICATED, credential.ended))
                return

    async def _teardown(self) -> None:
        if not getattr(self, "_open", False):
            return
        self._open = False
        metrics.WEBSOCKET_CLIENTS.labels(stream=self.stream).dec()
        watch = getattr(self, "_auth_watch", None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        await self.closed()


@dataclass(frozen=True)
class Credential:
    """What admitted a socket: an API key, or a browser session signing in a user. Re-read while the
    socket stays open, so that a revoked key and an ended session close it alike."""

    label: str  # for the logs: the key's prefix or the user's name, never a secret
    key_pk: Any = None
    session_key: str | None = None
    user_pk: Any = None

    @classmethod
    def of(cls, scope: dict[str, Any]) -> Credential:
        key = scope.get("api_key")
        if key is not None:
            return cls(label=f"API key {key.prefix}", key_pk=key.pk)
        user, session = scope["user"], scope.get("session")
        return cls(
            label=f"the session of {user.get_username()}",
            session_key=getattr(session, "session_key", None),
            user_pk=user.pk,
        )

    @property
    def ended(self) -> str:
        if self.key_pk is not None:
            return "The API key was revoked or has expired."
        return "The session has ended: signed out or expired, the password changed or the user deactivated."


def _credential_valid(credential: Credential) -> bool:
    if credential.key_pk is not None:
        key = ScopedAPIKey.objects.filter(pk=credential.key_pk).first()
        return key is not None and not key.revoked and not key.has_expired
    return session_signs_in(credential.session_key, credential.user_pk)


class NoSuchStream(AsyncWebsocketConsumer):
    """Any other websocket path: told which streams there are and closed (4404), as an unknown HTTP path
    answers 404, instead of failing the handshake with a server error."""

    streams: tuple[str, ...] = ()

    def __init__(self, *args: Any, streams: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams = streams

    async def connect(self) -> None:
        await self.accept()
        where = ", ".join(self.streams)
        await self.send(dumps(error_frame(ErrorCode.NOT_FOUND, f"No stream at this path; the streams are {where}.")))
        await self.close(code=CLOSE_NOT_FOUND)
