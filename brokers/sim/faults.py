"""Fault injection, driven from tests (Python API) or ibsim command-line options.

All methods are thread-safe: they only flip state read by the gateway's event loop,
or hand work to that loop.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .server import SimGateway


class Faults:
    def __init__(self, gateway: SimGateway) -> None:
        self._gw = gateway
        self._lock = threading.Lock()
        self._delays: dict[int, float] = {}
        self._swallow: set[int] = set()
        self._drop_after: dict[int, int] = {}
        self._refuse_until = 0.0
        self._rejects: dict[str, str] = {}
        self._history_open = threading.Event()
        self._history_open.set()
        self._history_waiting = 0
        self._loop_free = threading.Event()
        self._loop_free.set()

    # -- configuration
    def delay(self, msg_id: int, seconds: float) -> None:
        """Handle requests with this msgId (and so send their replies) ``seconds`` late."""
        with self._lock:
            self._delays[int(msg_id)] = float(seconds)

    def never_answer(self, msg_id: int) -> None:
        """Silently swallow requests with this msgId."""
        with self._lock:
            self._swallow.add(int(msg_id))

    def drop_after(self, msg_id: int, count: int = 1) -> None:
        """Close every client socket right after handling the ``count``-th next request with this msgId:
        requests a client sent behind it are never read (a gateway that dies in the middle of a burst)."""
        with self._lock:
            self._drop_after[int(msg_id)] = int(count)

    def reject_order(self, order_ref: str, reason: str = "The order is not accepted.") -> None:
        """Reject the next new order with this orderRef as IB rejects one: error 201 "Order rejected -
        reason:...", the order kept as Inactive. A held bracket leg sent before it stays held."""
        with self._lock:
            self._rejects[order_ref] = f"Order rejected - reason:{reason}"

    def hold_history(self) -> None:
        """Keep historical answers (bars, schedules, histograms) in the making until ``release_history()``:
        the gateway meanwhile serves everything else, as it does while it computes a large request."""
        self._history_open.clear()

    def release_history(self) -> None:
        self._history_open.set()

    def history_waiting(self) -> int:
        """How many historical answers are being held."""
        with self._lock:
            return self._history_waiting

    def stall(self) -> None:
        """Keep the gateway's event loop busy (nothing read, answered or ticked) until ``unstall()``, as a
        slow handler would; returns once the loop is stalled."""
        entered = threading.Event()
        self._loop_free.clear()

        def block() -> None:
            entered.set()
            self._loop_free.wait(60)

        loop = self._gw._loop
        if loop is not None:
            loop.call_soon_threadsafe(block)
            entered.wait(10)

    def unstall(self) -> None:
        self._loop_free.set()

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (clients get ConnectionRefusedError), then listen again."""
        with self._lock:
            self._refuse_until = time.monotonic() + float(seconds)
        self._gw._call(self._gw._pause_listening, float(seconds))

    def drop_all_connections(self) -> None:
        """Close every client socket (like a gateway restart); the listener stays up."""
        self._gw._call(self._gw._drop_all)

    def clear(self) -> None:
        with self._lock:
            self._delays.clear()
            self._swallow.clear()
            self._drop_after.clear()
            self._rejects.clear()
            self._refuse_until = 0.0
        self._history_open.set()
        self._loop_free.set()

    # -- queried by the server
    def delay_for(self, msg_id: int) -> float:
        with self._lock:
            return self._delays.get(msg_id, 0.0)

    def swallows(self, msg_id: int) -> bool:
        with self._lock:
            return msg_id in self._swallow

    def drops_after(self, msg_id: int) -> bool:
        """Whether handling this request is the moment to drop every connection (counts it)."""
        with self._lock:
            left = self._drop_after.get(msg_id)
            if left is None:
                return False
            if left > 1:
                self._drop_after[msg_id] = left - 1
                return False
            del self._drop_after[msg_id]
            return True

    def rejection(self, order_ref: str) -> str:
        """IB's rejection text for a new order with this orderRef, if one is due (once), else ''."""
        with self._lock:
            return self._rejects.pop(order_ref, "")

    def history_gate(self) -> None:
        """Called where historical answers are computed: waits while they are held (a minute at most)."""
        if self._history_open.is_set():
            return
        with self._lock:
            self._history_waiting += 1
        try:
            self._history_open.wait(60)
        finally:
            with self._lock:
                self._history_waiting -= 1

    def refusing(self) -> bool:
        with self._lock:
            return time.monotonic() < self._refuse_until
