"""The broker adapter across processes: the owner serves it on the channel layer, the others call it.

Protocol (every message is msgpack-safe: str, int, float, bool, None, lists and str-keyed dicts):

- a caller sends `{"type": "broker.call", "id", "method", "kwargs", "reply_to", "deadline"}` to the
  well-known channel `ibkrgw.broker`, which only the owner consumes. `deadline` (epoch seconds) is
  the latest moment the owner may *start* the call; later it is dropped unanswered.
- the owner answers on the caller's `reply_to` channel: first `{"type": "broker.accepted", "id"}`
  when it starts a call that goes to IB, then `{"type": "broker.reply", "id", "ok", "result" |
  "error"}`. Calls answered from memory (health, cached quotes) get the reply at once.
- `reply_to: None` marks a call nobody waits for (quote subscription bookkeeping).

Failure: no acceptance by the deadline (plus transit) means no owner started the call, so it is
`BrokerUnavailable` (503) and safe to repeat. Accepted but unanswered (the owner died mid-call) is
`broker_timeout`: for order calls the outcome is unknown, so that error is a plain `GatewayError`,
which the order service records as `unknown` for reconciliation instead of `rejected`.

Values cross with a small explicit codec: the frozen dataclasses of `brokers.adapter` by name and
fields, `Decimal` and `datetime` tagged as strings, tuples tagged so they come back as tuples.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Coroutine
from datetime import datetime
from decimal import Decimal
from typing import Any

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from brokers import adapter as adapter_types
from ibkrgw.errors import BrokerUnavailable, GatewayError

logger = logging.getLogger(__name__)

BROKER_CHANNEL = "ibkrgw.broker"
ACCEPT_WITHIN_S = 2.0  # an owner that is alive picks a call up within milliseconds
TRANSIT_S = 2.0  # extra wait for an acceptance sent just before the deadline
REPLY_MARGIN_S = 2.0  # the owner's own IB timeout (and its 504) must arrive before ours
HEALTH_CACHE_S = 0.5
SYNC_EVERY_S = 2.0  # a follower re-sends its quote subscriptions this often...
FOLLOWER_TTL_S = 10.0  # ...and the owner drops them when it has not heard from it for this long
SERVER_THREADS = 32
# Answered from the owner's memory on its loop: no IB round trip, so no acceptance message.
INSTANT = frozenset({"health", "orders_allowed", "quote_cached", "managed_accounts", "quote_sync", "orders_recheck"})
CALLS = frozenset(
    {
        "health",
        "managed_accounts",
        "resolve_contracts",
        "quote_snapshot",
        "quote_cached",
        "bars",
        "account_summary",
        "positions",
        "pnl",
        "order_preview",
        "order_place",
        "order_cancel",
        "orders_cancel_all",
        "order_sends_blocked",
        "open_orders",
        "account_risk",
        "snapshot",
        "orders_recheck",
        "orders_allowed",
        "quote_sync",
    }
)
# Calls whose effect at the broker is unknown when the owner accepted them and then went silent.
MUTATING = frozenset({"order_place", "order_cancel", "orders_cancel_all", "order_sends_blocked"})


# -- codec --------------------------------------------------------------------------------------
DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in vars(adapter_types).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == adapter_types.__name__
}


def encode(value: Any) -> Any:
    """Plain data for the channel layer. Raises TypeError for anything outside the broker interface."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum and friends become plain ints
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return str(value)  # StrEnum (ErrorCode) becomes a plain str
    if isinstance(value, Decimal):
        return {"$": "decimal", "v": str(value)}
    if isinstance(value, datetime):
        return {"$": "datetime", "v": value.isoformat()}
    if isinstance(value, tuple):
        return {"$": "tuple", "v": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$": "dict", "v": {str(k): encode(v) for k, v in value.items()}}
    cls = DATACLASSES.get(type(value).__name__)
    if cls is type(value):
        return {"$": cls.__name__, "v": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    raise TypeError(f"{type(value).__name__} cannot cross to another process")


def decode(value: Any) -> Any:
    """The inverse of `encode`. Raises ValueError for an unknown tag."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag, body = value["$"], value["v"]
    if tag == "decimal":
        return Decimal(body)
    if tag == "datetime":
        return datetime.fromisoformat(body)
    if tag == "tuple":
        return tuple(decode(v) for v in body)
    if tag == "dict":
        return {k: decode(v) for k, v in body.items()}
    cls = DATACLASSES.get(tag)
    if cls is None:
        raise ValueError(f"unknown type {tag!r} from another process")
    return cls(**{k: decode(v) for k, v in body.items()})


def encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GatewayError):
        kind = "broker_unavailable" if isinstance(exc, BrokerUnavailable) else "gateway"
        return {
            "kind": kind,
            "code": str(exc.code),
            "message": exc.message,
            "http_status": exc.http_status,
            "details": encode(exc.details),
        }
    return {"kind": "internal", "code": "", "message": f"{type(exc).__name__}: {exc}", "http_status": 500}


class RemoteError(RuntimeError):
    """An unexpected error in the owner (a bug, not a broker answer); rendered as internal_error."""


def decode_error(data: dict[str, Any]) -> Exception:
    if data["kind"] == "broker_unavailable":
        return BrokerUnavailable(
            data["message"], code=data["code"], http_status=data["http_status"], details=decode(data["details"])
        )
    if data["kind"] == "gateway":
        return GatewayError(
            data["code"], data["message"], http_status=data["http_status"], details=decode(data["details"])
        )
    return RemoteError(data["message"])


# -- the loop both sides use --------------------------------------------------------------------


class RpcLoop:
    """A thread with its own asyncio loop and its own channel-layer instance.

    Its own instance because channels-redis binds its receive lock to one loop, and the ASGI loop
    uses the shared instance.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self._thread = threading.Thread(target=self._run, name="broker-rpc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            try:
                self.submit(cancel_all()).result(5)
            except Exception:
                logger.debug("rpc loop tasks did not stop cleanly", exc_info=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
