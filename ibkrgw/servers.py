"""What a websocket client sees from the web server itself, before the application reads a frame: the same
under the production server (uvicorn, `ibkrgw.serve`) and under daphne (`manage.py runserver`, `daphne`).

- A message up to WS_MAX_MESSAGE_BYTES reaches the application, which answers anything over its own
  limit (64 KiB) with an error frame `request_too_large` and keeps the socket open.
- A larger message is refused by the server: close code 1009.
- A text frame that is not UTF-8: close code 1007, and at most one WARNING line a minute in the log.

Kept free of Django imports: `ibkrgw.serve` reads it before Django is set up.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

# uvicorn's default, stated here so that daphne is held to the same.
WS_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class InvalidUtf8FrameFilter(logging.Filter):
    """On uvicorn's `uvicorn.error` logger. uvicorn closes a text frame that is not UTF-8 with 1007, as it
    should, but logs each one at ERROR with a traceback: any key holder could flood the log. Such a record
    becomes one WARNING line without traceback, at most one per `interval_s`, counting the ones left out.
    Every other record passes unchanged."""

    # The exact line uvicorn's websockets sans-I/O protocol logs (WebSocketsSansIOProtocol).
    MESSAGE = "Invalid UTF-8 sequence received from client."

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE or not (record.exc_info and isinstance(record.exc_info[1], UnicodeDecodeError)):
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._next_at:
                self._left_out += 1
                return False
            left_out, self._left_out, self._next_at = self._left_out, 0, now + self.interval_s
        record.msg = "websocket: a text frame that is not UTF-8 was closed with 1007"
        if left_out:
            record.msg += f" ({left_out} more since the last such line)"
        record.args = None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def daphne_websockets_like_production() -> None:
    """By default daphne (autobahn) drops the TCP connection on a message over 1 MiB or a text frame that is
    not UTF-8, without a close code. Make it answer as the production server does: messages up to
    WS_MAX_MESSAGE_BYTES reach the application, a larger one closes 1009, bad UTF-8 closes 1007. This
    holds whatever daphne's --websocket-max-* options say. Only where daphne serves (its server module is
    loaded); the production server's process never imports Twisted."""
    server = sys.modules.get("daphne.server")
    if server is None:
        return
    factory = server.WebSocketFactory
    original = factory.setProtocolOptions
    if getattr(original, "like_production", False):
        return

    def set_protocol_options(self, *args, **kwargs):
        kwargs.update(
            failByDrop=False,  # fail with a close frame and its code, not by dropping the connection
            maxMessagePayloadSize=WS_MAX_MESSAGE_BYTES,
            maxFramePayloadSize=WS_MAX_MESSAGE_BYTES,
        )
        return original(self, *args, **kwargs)

    set_protocol_options.like_production = True  # type: ignore[attr-defined]
    factory.setProtocolOptions = set_protocol_options
