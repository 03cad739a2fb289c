"""Generated hostile values thrown at every REST endpoint, both websocket streams and the MCP tools.

Every answer is a 4xx in the error shape (never a 5xx, never a closed socket), and nothing reaches the
broker: the simulated gateway, watched through its own dispatch, receives no request on a client's behalf.
Orders are enabled, so an order that slipped through would be sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import strategies as hs
from tests.hostile.conftest import assert_error_shape

# Modest budgets: the suite runs on 2 shared cores in CI, on the same examples every time (a CI failure
# reproduces locally). FUZZ_EXAMPLES=1500 FUZZ_RANDOM=1 searches wider, on new examples each run.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ORDER = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "LMT", "limit_price": "100"}
ORDER_FIELDS = [
    "client_order_id",
    "account",
    "symbol",
    "sec_type",
    "exchange",
    "primary_exchange",
    "currency",
    "expiry",
    "strike",
    "right",
    "multiplier",
    "con_id",
    "action",
    "quantity",
    "order_type",
    "limit_price",
    "stop_price",
    "trail_amount",
    "trail_percent",
    "tif",
    "outside_rth",
    "take_profit",
    "stop_loss",
]
NUMERIC_FIELDS = ["quantity", "limit_price", "stop_price", "trail_amount", "trail_percent", "strike", "take_profit"]

BODY_ENDPOINTS = [
    ("post", "/api/v1/orders/", ORDER),
    ("post", "/api/v1/orders/preview/", ORDER),
    ("patch", f"/api/v1/orders/{uuid.UUID(int=1)}/", {"quantity": "2"}),
    ("post", f"/api/v1/orders/{uuid.UUID(int=1)}/cancel/", {}),
    ("post", "/api/v1/trading/halt/", {"reason": "fuzz"}),
    ("post", "/api/v1/trading/resume/", {"reason": "fuzz"}),
]
# Query parameters that reach the broker: refused characters and anything outside their alphabets.
BROKER_QUERY_ENDPOINTS = [
    ("/api/v1/contracts/", ["symbol", "sec_type", "exchange", "currency", "primary_exchange", "expiry", "strike"]),
    ("/api/v1/contracts/", ["right", "multiplier", "con_id", "unknown"]),
    ("/api/v1/quotes/AAPL/", ["exchange", "currency", "stream", "con_id"]),
    ("/api/v1/bars/AAPL/", ["bar_size", "duration", "what_to_show", "use_rth", "exchange"]),
    ("/api/v1/account/summary/", ["account"]),
    ("/api/v1/account/positions/", ["account"]),
    ("/api/v1/account/pnl/", ["account"]),
]
# Filters of the ledger (never sent to the broker): refused characters.
LEDGER_QUERY_ENDPOINTS = [
    ("/api/v1/orders/", ["status", "symbol", "account", "since", "limit", "offset"]),
    ("/api/v1/fills/", ["order_id", "symbol", "until", "limit"]),
    ("/api/v1/audit/", ["correlation_id", "event", "target_type", "since", "limit"]),
    ("/api/v1/health/", ["x"]),
]
PATH_ENDPOINTS = ["/api/v1/quotes/{}/", "/api/v1/bars/{}/", "/api/v1/orders/{}/", "/api/v1/orders/{}/cancel/"]


def assert_refused(response) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    return assert_error_shape(response.json())


@pytest.fixture
def armed(broker_tap, orders_enabled, api_client, admin_client):
    """Orders enabled and the broker watched; checks afterwards that nothing reached it or was halted."""
    yield broker_tap
    broker_tap.assert_untouched()
    assert api_client.get("/api/v1/health/").json()["trading_halted"] in (False, None)


# -- REST ------------------------------------------------------------------------------------------------
@FUZZ
@given(
    endpoint=st.sampled_from(BODY_ENDPOINTS),
    field=st.sampled_from([*ORDER_FIELDS, "reason", "extra"]),
    value=hs.hostile_value(),
)
def test_rest_bodies_with_a_hostile_field(armed, api_client, admin_client, endpoint, field, value):
    method, path, base = endpoint
    client = admin_client if path.endswith("resume/") else api_client
    payload = hs.body({**base, field: value})
    assert_refused(getattr(client, method)(path, data=payload, content_type="application/json"))


@FUZZ
@given(field=st.sampled_from(NUMERIC_FIELDS), value=st.one_of(hs.loose_numbers(), hs.huge_ints(), st.booleans()))
def test_rest_order_numbers_accept_plain_ascii_decimals_only(armed, api_client, field, value):
    payload = hs.body({**ORDER, "order_type": "STP_LMT", "stop_price": "100", field: value})
    for path in ("/api/v1/orders/", "/api/v1/orders/preview/"):
        error = assert_refused(api_client.post(path, data=payload, content_type="application/json"))
        assert error["code"] == "invalid_request"


@FUZZ
@given(
    endpoint=st.sampled_from(BODY_ENDPOINTS[:3]),
    raw=st.one_of(
        st.binary(max_size=64),
        st.builds(lambda n: b"[" * n, st.integers(1, 200_000)),
        st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, st.integers(21, 50_000)),
        st.just(b'{"quantity": 1' + b"0" * 5000 + b"}"),
        st.just(b'{"quantity": NaN}'),
        st.just(b"\xef\xbb\xbf{}"),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/x-www-form-urlencoded",
        ]
    ),
)
def test_rest_raw_bodies(armed, api_client, endpoint, raw, content_type):
    method, path, _ = endpoint
    assert_refused(getattr(api_client, method)(path, data=raw, content_type=content_type))


@FUZZ
@given(size=st.integers(256 * 1024 + 1, 12 * 1024 * 1024), endpoint=st.sampled_from(BODY_ENDPOINTS[:3]))
def test_rest_oversized_bodies_are_413(armed, api_client, size, endpoint):
    method, path, _ = endpoint
    response = getattr(api_client, method)(path, data=b"{" + b" " * (size - 2) + b"}", content_type="application/json")
    assert response.status_code == 413
    assert assert_error_shape(response.json())["code"] == "request_too_large"


@FUZZ
@given(
    endpoint=st.one_of(
        st.tuples(st.sampled_from(BROKER_QUERY_ENDPOINTS), st.just(hs.hostile_query_value())),
        st.tuples(st.sampled_from(LEDGER_QUERY_ENDPOINTS), st.just(hs.poisoned_text(hs.CONTROL_CHARS))),
    ),
    data=st.data(),
)
def test_rest_query_parameters(armed, api_client, endpoint, data):
    (path, names), values = endpoint
    name = data.draw(st.sampled_from(names))
    value = data.draw(values)
    response = api_client.get(f"{path}?{hs.percent(name)}={hs.percent(value)}")
    assert_refused(response)


@FUZZ
@given(template=st.sampled_from(PATH_ENDPOINTS), value=hs.hostile_query_value())
def test_rest_path_parameters(armed, api_client, template, value):
    method = "post" if template.endswith("cancel/") else "get"
    response = getattr(api_client, method)(template.format(hs.percent(value)))
    assert_refused(response)


# -- websockets ------------------------------------------------------------------------------------------
QUOTE_FRAMES = ["subscribe", "unsubscribe", "ping"]


def _frame(action: str, field: str, value: Any) -> str:
    base: dict[str, Any] = {"action": action}
    if field == "symbols":
        base["symbols"] = [value]
    elif field == "contracts":
        base["contracts"] = [{"symbol": "AAPL", "exchange": value}]
    else:
        base[field] = value
    return hs.body(base).decode()


@FUZZ
@given(
    target=st.sampled_from(
        [
            ("/ws/quotes/", "subscribe", "symbols"),
            ("/ws/quotes/", "unsubscribe", "symbols"),
            ("/ws/quotes/", "subscribe", "contracts"),
            ("/ws/quotes/", "subscribe", "action"),
            ("/ws/orders/", "resume", "after_seq"),
            ("/ws/orders/", "resume", "action"),
        ]
    ),
    data=st.data(),
)
async def test_websocket_frames(armed, ws_key, target, data):
    from tests.ws.conftest import TIMEOUT, connected

    path, action, field = target
    values = [hs.hostile_value()]
    if field == "after_seq":
        values += [hs.loose_numbers(), hs.huge_ints()]
    elif field in ("symbols", "contracts"):
        values.append(hs.poisoned_text(st.sampled_from(["\u0663", "\uff21", ";", "$", "'", "\u2028x"])))
    value = data.draw(st.one_of(values))
    ws = await connected(path, ws_key)
    try:
        await ws.send_to(text_data=_frame(action, field, value))
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        assert frame["type"] == "error", frame
        assert_error_shape({"error": {k: frame[k] for k in ("code", "message", "details")}})
        await ws.send_json_to({"action": "ping"})
        assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "pong"
    finally:
        await ws.disconnect()


# -- MCP -------------------------------------------------------------------------------------------------
MCP_TOOLS = {
    "place_order": ORDER,
    "preview_order": ORDER,
    "get_quote": {"symbol": "AAPL"},
    "get_bars": {"symbol": "AAPL"},
    "resolve_contract": {"symbol": "AAPL"},
    "get_account_summary": {},
    "list_positions": {},
    "get_pnl": {},
    "cancel_order": {"order_id": str(uuid.UUID(int=1))},
    "get_order": {"order_id": str(uuid.UUID(int=1))},
    "list_orders": {},
    "list_fills": {},
    "get_health": {},
}


def _sdk_can_send(value: Any) -> bool:
    """The SDK's client refuses to write an object key holding a lone surrogate (the stdio process answers such
    a message, sent raw: tests/mcp/test_process.py); any other hostile value it sends as given."""
    if isinstance(value, dict):
        return all(_encodable(key) and _sdk_can_send(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_sdk_can_send(item) for item in value)
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(
    tool=st.sampled_from(sorted(MCP_TOOLS)),
    field=st.sampled_from(["symbol", "quantity", "account", "order_id", "bar_size", "exchange", "con_id", "extra"]),
    value=hs.hostile_value().filter(lambda v: (not isinstance(v, hs.DeepJSON) or v.depth < 150) and _sdk_can_send(v)),
)
async def test_mcp_tool_arguments(armed, tool, field, value):
    from mcp.client.client import Client

    from ibkrgw.mcp_server import build_server

    async with Client(build_server(transport="stdio")) as client:
        result = await client.call_tool(tool, hs.materialize({**MCP_TOOLS[tool], field: value}))
    assert result.is_error, result.content[0].text[:300]
    error = assert_error_shape(json.loads(result.content[0].text))
    assert error["code"] in ("invalid_request", "not_found", "order_not_found"), error


# -- the order lane (a program's POST orders/ answered before Django's middleware) -----------------------
@cache
def _order_lane():
    from ibkrgw.orderlane import OrderLane
    from ibkrgw.web.handler import get_pooled_asgi_application

    django_app = get_pooled_asgi_application()
    return OrderLane(django_app, executor=django_app.executor)


@FUZZ
@given(field=st.sampled_from([*ORDER_FIELDS, "extra"]), value=hs.hostile_value())
def test_order_lane_bodies_with_a_hostile_field(armed, field, value):
    from ibkrgw.models import ScopedAPIKey
    from tests.ibkrgw.test_orderlane import auth, post

    key = ScopedAPIKey.objects.create_key(name="lane-fuzz", scope="trade")[1]
    asyncio.run(post(_order_lane(), {**ORDER, "quantity": "0"}, headers=auth(key)))  # verifies the key: 400
    status, headers, body = asyncio.run(post(_order_lane(), hs.body({**ORDER, field: value}), headers=auth(key)))
    assert 400 <= status < 500, (status, body)
    assert headers["content-type"].startswith("application/json")
    assert_error_shape(body)
