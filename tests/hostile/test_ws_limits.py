"""Websocket frames over the limits answer an error frame and the socket stays open (never close 1011)."""

from __future__ import annotations

import json

import pytest

from tests.hostile.conftest import assert_error_shape
from tests.ws.conftest import TIMEOUT, connected

pytestmark = pytest.mark.django_db(transaction=True)


async def error_then_still_open(ws, text: str | None = None, data: bytes | None = None) -> dict:
    if text is not None:
        await ws.send_to(text_data=text)
    else:
        await ws.send_to(bytes_data=data)
    frame = await ws.receive_json_from(timeout=TIMEOUT)
    assert frame["type"] == "error", frame
    error = assert_error_shape({"error": {k: frame[k] for k in ("code", "message", "details")}})
    await ws.send_json_to({"action": "ping", "id": 1})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong", "id": 1}
    return error


HOSTILE_FRAMES = [
    ("deep", '{"action": "subscribe", "symbols": ' + "[" * 1000 + "]" * 1000 + "}", "invalid_request"),
    ("deep-object", '{"action": "ping", "id": ' + '{"a":' * 1000 + "1" + "}" * 1000 + "}", "invalid_request"),
    ("surrogate", '{"action": "subscribe", "symbols": ["\\ud800"]}', "invalid_request"),
    ("surrogate-key", '{"action": "subscribe", "\\udfff": 1}', "invalid_request"),
    ("nul", '{"action": "subscribe", "symbols": ["AAPL\\u0000STK\\u0000SMART"]}', "invalid_request"),
    (
        "control",
        '{"action": "subscribe", "contracts": [{"symbol": "AAPL", "exchange": "SMART\\u001b"}]}',
        "invalid_request",
    ),
    ("too-big", json.dumps({"action": "ping", "id": "x" * (70 * 1024)}), "request_too_large"),
    ("huge-int", '{"action": "ping", "id": ' + "9" * 5000 + "}", "invalid_request"),
    ("nan", '{"action": "ping", "id": NaN}', "invalid_request"),
    ("not-json", "{", "invalid_request"),
    ("wrong-type", '["subscribe"]', "invalid_request"),
    ("action-type", '{"action": {"a": 1}}', "invalid_request"),
    ("unicode-symbol", '{"action": "subscribe", "symbols": ["ＡＡＰＬ"]}', "invalid_request"),
]


@pytest.mark.parametrize(("name", "text", "code"), HOSTILE_FRAMES, ids=[f[0] for f in HOSTILE_FRAMES])
async def test_hostile_quote_frames_get_an_error_frame(broker_tap, ws_key, name, text, code):
    ws = await connected("/ws/quotes/", ws_key)
    error = await error_then_still_open(ws, text=text)
    assert error["code"] == code
    await ws.disconnect()
    broker_tap.assert_untouched()


async def test_invalid_utf8_in_a_binary_frame_gets_an_error_frame(broker_tap, ws_key):
    ws = await connected("/ws/quotes/", ws_key)
    error = await error_then_still_open(ws, data=b'{"action": "ping", "id": "\xff\xfe"}')
    assert error["details"]["reason"] == "not_utf8"
    await ws.disconnect()


@pytest.mark.parametrize(
    "text",
    [
        '{"action": "resume", "after_seq": ' + "[" * 1000 + "]" * 1000 + "}",
        '{"action": "resume", "after_seq": "\\ud800"}',
        '{"action": "resume", "after_seq": ' + "9" * 5000 + "}",
        '{"action": "resume", "after_seq": "٣"}',
        '{"action": "resume", "after_seq": true}',
    ],
)
async def test_hostile_order_stream_frames_get_an_error_frame(broker_tap, ws_key, text):
    ws = await connected("/ws/orders/", ws_key)
    error = await error_then_still_open(ws, text=text)
    assert error["code"] == "invalid_request"
    await ws.disconnect()
    broker_tap.assert_untouched()
