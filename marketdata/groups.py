"""Quote subscriptions shared by every watcher of a contract.

One broker subscription per contract however many watchers (websocket clients, REST stream
holds) there are; the worker counts watchers and cancels the subscription when the last leaves.
"""

from __future__ import annotations

import threading
import time

from brokers import runtime
from brokers.adapter import ContractInfo

REST_HOLD_S = 300.0  # a REST `stream=true` subscription lives this long after its last use
_rest_holds: dict[int, float] = {}
_rest_lock = threading.Lock()


def quote_group_name(con_id: int) -> str:
    return f"quotes.{con_id}"


def rest_stream_hold(contract: ContractInfo) -> None:
    """Keep a streaming subscription for REST callers; expire holds idle for REST_HOLD_S."""
    adapter = runtime.adapter()
    now = time.monotonic()
    with _rest_lock:
        for con_id, last_used in list(_rest_holds.items()):
            if now - last_used > REST_HOLD_S:
                del _rest_holds[con_id]
                adapter.quote_unsubscribe(con_id=con_id)
        if contract.con_id not in _rest_holds:
            adapter.quote_subscribe(contract=contract)
        _rest_holds[contract.con_id] = now
