"""Helpers for hostile-input tests: the error shape, and a tap on the simulated gateway that records
every request message it receives, so a test can show that nothing reached the broker."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from orders.models import Fill
from orders.pipeline import pipeline
from tests.conftest import wait_for
from tests.ws.conftest import ws_key  # noqa: F401 - a read-scope key for websocket tests

# TWS message ids that ask the broker for something on a client's behalf.
BROKER_REQUESTS = {
    1: "reqMktData",
    3: "placeOrder",
    9: "reqContractDetails",
    20: "reqHistoricalData",
    62: "reqAccountSummary",
    92: "reqPnL",
}


class BrokerTap:
    """Records the message ids the simulated gateway receives (it still handles every one)."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self._lock = threading.Lock()
        self.seen: list[tuple[int, list[str]]] = []
        self.orders_before = len(sim.received_orders())
        original = sim._dispatch

        def dispatch(session, msg_id: int, fields: list[str]) -> None:
            with self._lock:
                self.seen.append((msg_id, list(fields)))
            original(session, msg_id, fields)

        sim._dispatch = dispatch

    def requests(self) -> list[str]:
        with self._lock:
            return [BROKER_REQUESTS[m] for m, _ in self.seen if m in BROKER_REQUESTS]

    def clear(self) -> None:
        """Forget what arrived so far (e.g. a test's own valid set-up request)."""
        with self._lock:
            self.seen.clear()
        self.orders_before = len(self.sim.received_orders())

    def assert_untouched(self) -> None:
        assert self.requests() == [], f"reached the broker: {self.requests()}"
        assert self.sim.received_orders()[self.orders_before :] == []


@pytest.fixture
def broker_tap(ib_runtime, sim_gateway, monkeypatch) -> BrokerTap:
    # Only requests count here: the owner's background chores (account snapshots) would read the account.
    from brokers import events

    monkeypatch.setattr(events, "_chores", {})
    return BrokerTap(sim_gateway)


def assert_error_shape(body: Any, code: str | None = None) -> dict:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_shaped(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return assert_error_shape(response.json(), code)


# -- a small ledger, for the sweeps of tests/hostile/test_database_edits*.py --------------------------
def order_body(**overrides) -> dict:
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "LMT", "limit_price": "181.00"}
    return {**body, **overrides}


@pytest.fixture
def ledger(ib_runtime, sim_gateway, orders_enabled, settings, api_client) -> tuple[str, str]:
    """A filled market order and a resting limit order (its market paused below the limit); their ids."""
    settings.RISK_MAX_ORDERS_PER_MINUTE = 1000
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", "190.00")
    market = order_body(client_order_id="edit-1", order_type="MKT", limit_price=None)
    filled = api_client.post("/api/v1/orders/", market, format="json")
    assert filled.status_code == 201, filled.content
    working = api_client.post("/api/v1/orders/", order_body(client_order_id="edit-2"), format="json")
    assert working.status_code == 201, working.content
    pipeline().drain()
    wait_for(Fill.objects.exists, timeout=20)
    api_client.get("/api/v1/account/summary/")  # cached account and contract rows exist too
    api_client.get("/api/v1/quotes/AAPL/")
    return filled.json()["id"], working.json()["id"]
