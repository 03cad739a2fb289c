"""What a websocket client sees from the web server itself, before the application reads a frame.

- A text frame that is not UTF-8: close code 1007, and at most one WARNING line a minute in the log.
"""

from __future__ import annotations

import logging
import threading
import time


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
