"""Every list (orders, fills, audit) shares one time window and one paging, through REST and MCP alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orders import mcp_tools
from orders.api import FillListQuery, OrderListQuery
from tests.factories import FillFactory, OrderFactory, make_actor

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
TIMES = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def ledger(transactional_db):
    orders = [OrderFactory(created_at=moment, client_order_id=f"win-{i}") for i, moment in enumerate(TIMES)]
    fills = [FillFactory(order=order, executed_at=moment) for order, moment in zip(orders, TIMES, strict=True)]
    return orders, fills


def test_window_includes_since_and_excludes_until(api_client, ledger):
    orders, fills = ledger
    window = {"since": _iso(TIMES[1]), "until": _iso(TIMES[2])}

    listed_orders = api_client.get("/api/v1/orders/", window).json()
    listed_fills = api_client.get("/api/v1/fills/", window).json()

    assert [o["client_order_id"] for o in listed_orders["results"]] == ["win-1"]
    assert [f["exec_id"] for f in listed_fills["results"]] == [fills[1].exec_id]


def test_open_ended_window_and_paging(api_client, ledger):
    page = api_client.get("/api/v1/orders/", {"since": _iso(TIMES[0]), "limit": 1, "offset": 1}).json()

    assert page["count"] == 3
    assert [o["client_order_id"] for o in page["results"]] == ["win-1"]  # newest first: win-2, win-1, win-0


def test_mcp_pages_like_rest(api_client, ledger):
    params = {"until": _iso(TIMES[2]), "limit": 1}
    rest = api_client.get("/api/v1/fills/", params).json()
    query = mcp_tools.FillListInput(data=params)
    query.is_valid(raise_exception=True)

    mcp = mcp_tools.list_fills.body(query, make_actor())

    assert mcp["count"] == rest["count"] == 2
    assert mcp["results"] == rest["results"]
    assert mcp["next_offset"] == 1  # MCP pages with limit/offset, not URLs


def test_unknown_list_parameter_is_an_error(api_client, ledger):
    response = api_client.get("/api/v1/orders/", {"since": _iso(T0), "sort": "price"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "sort" in str(error["details"])


def test_window_and_paging_come_after_a_list_own_filters():
    # The order parameters appear in (schema, error details): the list's filters first, then the window.
    assert list(OrderListQuery().fields) == ["status", "symbol", "account", "since", "until", "limit", "offset"]
    assert list(FillListQuery().fields) == ["order_id", "symbol", "account", "since", "until", "limit", "offset"]


ARABIC_2026 = "\u0662\u0660\u0662\u0666"  # ٢٠٢٦: digits to Python's int() and Django's date parser, not to IB


@pytest.mark.parametrize("path", ["/api/v1/orders/", "/api/v1/fills/", "/api/v1/audit/"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "\u0661"),  # ١
        ("offset", "\u0661"),
        ("limit", "\uff11"),  # １ (full width)
        ("since", ARABIC_2026 + "-03-02T14:30:00Z"),
        ("until", ARABIC_2026 + "-03-02T14:30:00Z"),
    ],
)
def test_window_and_paging_take_ascii_digits_only(api_client, ledger, path, name, value):
    response = api_client.get(path, {name: value})

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert list(error["details"]["fields"]) == [name]
    assert "ASCII digits only" in error["details"]["fields"][name][0]
    # The same value in ASCII digits is a window or a page.
    ascii_value = value.replace(ARABIC_2026, "2026").replace("\u0661", "1").replace("\uff11", "1")
    assert api_client.get(path, {name: ascii_value}).status_code == 200
