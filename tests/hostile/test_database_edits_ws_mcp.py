"""Rows rewritten behind the gateway's back must not take the websocket or the MCP door down either.

As in `test_database_edits` (the REST and console doors, every column), someone holding the database (the
append-only triggers dropped) writes a value the gateway never writes into one column of every row of a
table; then the websocket streams and every MCP tool are used on a ledger holding a filled market order
and a resting limit order:

- `/ws/orders/`: the replay from seq 0, a resume on the open socket, and the live events of the orders
  MCP places, modifies and cancels meanwhile; `/ws/quotes/`: a subscription. No stream may close with
  1011, and every frame is data or an error frame with a snake_case code other than `internal_error`.
- MCP, through the SDK's own client on the server in process: the account, quote and contract tools,
  get/list orders and fills, the audit tool, preview, place (new and replayed), modify, cancel, and the
  trading-status and order resources. Each answers within its timeout, with a result its client accepts
  (its output schema) or a tool error in the REST shape whose code is not `internal_error`; and the
  session still answers a call afterwards.

Which columns: not the cross product (the REST sweep has it; these doors read through the same services),
but one column of each model of the orders and audit apps, and together one of each kind of value: text in
a number and in a date column, an unknown choice, valid JSON of the wrong shape, JSON null in a column that
cannot hold it, a JSON number no float can hold, a number no decimal column can hold, a calendar-end date, a
fraction in an integer column, text in a boolean. Then a few more where these doors decide something from
the value: an order's status, a fill's quantity and time, a time in a form never written, the contract
cache and the market-data lines the quote doors read.
"""

from __future__ import annotations

import json
import re

import anyio
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from audit.triggers import APPEND_ONLY_TABLES, drop_triggers
from ibkrgw.mcp_server import build_server
from marketdata.services import contract_cache_clear
from tests.hostile.conftest import order_body
from tests.ws.conftest import TIMEOUT, communicator

pytestmark = pytest.mark.django_db(transaction=True)

CODE = re.compile(r"^[a-z][a-z0-9_]*$")
CALL_TIMEOUT = 20  # seconds for any one MCP call: a hung call fails the test instead of the suite's timeout

EDITS = [
    ("orders_order", "action", "garbage"),  # an unknown choice
    ("orders_orderevent", "data", "[1, 2]"),  # JSON of the wrong shape
    ("orders_order", "preview", '{"commission": 1e999}'),  # JSON SQLite takes, which Python reads as infinity
    ("orders_orderevent", "broker_order_id", "1.5"),  # a fraction in an integer column
    ("orders_fill", "price", "garbage"),  # text in a number
    ("orders_commission", "commission", "1e999"),  # no decimal column can hold it
    ("orders_tradingswitchevent", "at", "9999-12-31 23:59:59.999999"),  # the calendar's end
    ("orders_haltsweep", "working_orders", "garbage"),  # text in an integer
    ("orders_order", "outside_rth", "garbage"),  # text in a boolean
    ("audit_auditentry", "created_at", "garbage"),  # text in a date
    ("audit_auditentry", "data", "null"),  # JSON null where the column cannot hold it
    # More of the same kinds where the streams and tools decide something from the value.
    ("orders_orderevent", "status", "garbage"),  # whether an order is working: cancel, modify, the stream
    ("orders_fill", "quantity", "123456789012345678901234567890"),  # positions and fills
    ("orders_fill", "executed_at", "0001-01-01 00:00:00"),  # the calendar's start
    ("orders_order", "created_at", "2026-01-01T00:00:00+05:00"),  # a time in a form the gateway never writes
    ("marketdata_cachedcontract", "data", '{"x": {"y": null}}'),  # the contracts quotes and orders resolve
    ("brokers_marketdatalineuse", "lines", "1e999"),  # the market-data lines a subscription counts
]


def _rewrite(table: str, column: str, value: str) -> None:
    with connection.schema_editor() as editor:
        for append_only in APPEND_ONLY_TABLES:
            drop_triggers(editor, append_only)  # put back by the test database's teardown
    with connection.cursor() as cursor:
        cursor.execute(f'UPDATE "{table}" SET "{column}" = %s', [value])
    contract_cache_clear()  # read as a process started now (an MCP server, say) reads it


def _frame_problem(frame: dict) -> str | None:
    if frame.get("type") in ("order", "fill"):
        return None if isinstance(frame.get(frame["type"]), dict) else "no payload"
    if frame.get("type") == "error":
        code = frame.get("code")
        if not isinstance(code, str) or not CODE.match(code) or code == "internal_error":
            return f"error frame {code!r}"
        return None
    return None if frame.get("type") in ("resumed", "subscribed", "pong") else "unknown frame"


async def _frames_until(ws, door: str, done, failures: dict) -> dict | None:
    """Frames until one `done` accepts (returned); a bad frame, a close or a timeout is a failure."""
    while True:
        try:
            output = await ws.receive_output(timeout=TIMEOUT)
        except TimeoutError:
            failures[door] = "no answer"
            return None
        if output["type"] == "websocket.close":
            failures[door] = f"closed {output.get('code')}"
            return None
        frame = json.loads(output["text"])
        problem = _frame_problem(frame)
        if problem:
            failures[door] = f"{problem}: {str(frame)[:300]}"
        if done(frame):
            return frame


def _mcp_calls(filled: str, working: str) -> list[tuple[str, dict]]:
    return [
        ("get_health", {}),
        ("get_account_summary", {}),
        ("list_positions", {}),
        ("get_pnl", {}),
        ("resolve_contract", {"symbol": "AAPL"}),
        ("get_quote", {"symbol": "AAPL"}),
        ("get_order", {"order_id": filled}),
        ("get_order", {"order_id": working}),
        ("list_orders", {}),
        ("list_fills", {}),
        ("list_audit_entries", {}),
        ("list_audit_entries", {"order_id": filled}),
        ("preview_order", order_body()),
        ("place_order", order_body(client_order_id="edit-mcp")),
        ("place_order", order_body(client_order_id="edit-2")),  # the ledger's own key: a replay
        ("modify_order", {"order_id": working, "quantity": "2"}),
        ("cancel_order", {"order_id": working}),
    ]


async def _mcp_doors(client: Client, filled: str, working: str, failures: dict) -> bool:
    """Every call; whether one of them changed an order (its events then reach the stream)."""
    changed = False
    for tool, arguments in _mcp_calls(filled, working):
        door = f"mcp {tool} {sorted(arguments)}"
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                result = await client.call_tool(tool, arguments)
        except Exception as exc:  # a hung call, or an answer its own client refuses (its output schema)
            failures[door] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        if result.is_error:
            code = json.loads(result.content[0].text)["error"]["code"]
            if not CODE.match(code) or code == "internal_error":
                failures[door] = code
        elif tool in ("place_order", "modify_order", "cancel_order"):
            changed = True
    for uri in ("ibkr://trading-status", f"ibkr://orders/{filled}"):
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                await client.read_resource(uri)
        except MCPError as exc:  # a refusal carries the REST error body
            data = exc.error.data if isinstance(exc.error.data, dict) else {}
            code = data.get("error", {}).get("code")
            if code is None or code == "internal_error":
                failures[f"mcp read {uri}"] = str(exc)[:300]
        except Exception as exc:
            failures[f"mcp read {uri}"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return changed


@pytest.mark.parametrize(("table", "column", "value"), EDITS, ids=[f"{t}.{c}={v}" for t, c, v in EDITS])
async def test_no_stream_or_tool_fails_after_a_column_is_rewritten(ledger, ws_key, table, column, value):
    filled, working = ledger
    await sync_to_async(_rewrite)(table, column, value)
    failures: dict[str, str] = {}

    orders = communicator("/ws/orders/?after_seq=0", key=ws_key)
    assert (await orders.connect(timeout=TIMEOUT))[0]
    resumed = await _frames_until(orders, "ws replay", lambda f: f.get("type") == "resumed", failures)
    await orders.send_json_to({"action": "resume", "after_seq": 0})
    await _frames_until(orders, "ws resume", lambda f: f.get("type") in ("resumed", "error"), failures)

    quotes = communicator("/ws/quotes/", key=ws_key)
    assert (await quotes.connect(timeout=TIMEOUT))[0]
    await quotes.send_json_to({"action": "subscribe", "symbols": ["AAPL"]})
    await _frames_until(quotes, "ws quotes", lambda f: f.get("type") == "subscribed", failures)
    await quotes.disconnect()

    async with Client(build_server(transport="stdio")) as client:
        changed = await _mcp_doors(client, filled, working, failures)
        with anyio.fail_after(CALL_TIMEOUT):
            assert not (await client.call_tool("get_health", {})).is_error  # the session still serves

    # The stream still answers, and what MCP changed reached it live (as frames it can send).
    last = resumed["last_seq"] if resumed else 0
    seen = {"pong": False, "live": not changed}

    def answered(frame: dict) -> bool:
        seen["pong"] = seen["pong"] or frame.get("type") == "pong"
        seen["live"] = seen["live"] or frame.get("seq", 0) > last
        return seen["pong"] and seen["live"]

    await orders.send_json_to({"action": "ping"})
    await _frames_until(orders, "ws live", answered, failures)
    await orders.disconnect()
    assert failures == {}
