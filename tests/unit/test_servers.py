"""The filter on uvicorn's error log: a text frame that is not UTF-8 makes at most one WARNING line per
interval, without traceback, counting those left out; every other record passes untouched. daphne's
websocket options: the production server's size limit, failures answered with a close code."""

from __future__ import annotations

import logging
import sys

from django.conf import settings

from ibkrgw import servers
from ibkrgw.servers import WS_MAX_MESSAGE_BYTES, InvalidUtf8FrameFilter


def _record(msg: str, exc: BaseException | None) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, msg, None, exc_info)


def _bad_utf8() -> logging.LogRecord:
    return _record(InvalidUtf8FrameFilter.MESSAGE, UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))


def test_one_warning_line_per_interval_with_a_count(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(servers.time, "monotonic", lambda: now[0])
    f = InvalidUtf8FrameFilter(interval_s=60.0)

    first = _bad_utf8()
    assert f.filter(first)
    assert first.levelno == logging.WARNING and first.levelname == "WARNING"
    assert first.exc_info is None and first.exc_text is None
    assert first.getMessage() == "websocket: a text frame that is not UTF-8 was closed with 1007"
    assert "\n" not in logging.Formatter().format(first)

    assert not any(f.filter(_bad_utf8()) for _ in range(1000))
    now[0] += 61
    later = _bad_utf8()
    assert f.filter(later)
    assert later.getMessage().endswith("(1000 more since the last such line)")


def test_other_records_pass_unchanged():
    f = InvalidUtf8FrameFilter()
    assert f.filter(_bad_utf8())
    for msg, exc in (
        ("Exception in ASGI application\n", RuntimeError("boom")),
        (InvalidUtf8FrameFilter.MESSAGE, RuntimeError("not a decoding error")),
        (InvalidUtf8FrameFilter.MESSAGE, None),
    ):
        record = _record(msg, exc)
        assert f.filter(record)  # even within the interval of the line above
        assert (record.levelno, record.msg) == (logging.ERROR, msg)
        assert (record.exc_info is not None) == (exc is not None)


def test_it_is_on_uvicorns_error_logger():
    assert settings.LOGGING["filters"]["invalid_utf8_frame"]["()"] == "ibkrgw.servers.InvalidUtf8FrameFilter"
    assert settings.LOGGING["loggers"]["uvicorn.error"]["filters"] == ["invalid_utf8_frame"]
    assert any(isinstance(f, InvalidUtf8FrameFilter) for f in logging.getLogger("uvicorn.error").filters)


def test_daphne_fails_websockets_with_a_close_code_at_the_production_limit():
    from daphne.server import WebSocketFactory  # loaded with daphne's app, which `ready()` saw

    factory = WebSocketFactory(object, server="daphne")
    factory.setProtocolOptions(maxMessagePayloadSize=1024 * 1024, maxFramePayloadSize=1024 * 1024)  # daphne's own
    assert factory.failByDrop is False
    assert factory.maxMessagePayloadSize == factory.maxFramePayloadSize == WS_MAX_MESSAGE_BYTES
