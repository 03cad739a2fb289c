"""Refusals over the audit bound are counted, and the count is written without waiting for another refusal:
by the housekeeping chore once the minute is over, and when the process stops."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audit.models import AuditEntry
from brokers import events, runtime
from ibkrgw.models import ScopedAPIKey
from orders.services import refusals

pytestmark = pytest.mark.django_db(transaction=True)

MALFORMED = {"symbol": "AAPL", "action": "BUY", "quantity": "bad", "order_type": "MKT"}


@pytest.fixture(autouse=True)
def _fresh_window():
    refusals.bound_reset()
    yield
    refusals.bound_reset()


def _flood(api_client, times: int) -> None:
    for _ in range(times):
        assert api_client.post("/api/v1/orders/", MALFORMED, format="json").status_code == 400


def _summaries() -> list[dict]:
    return [e.data for e in AuditEntry.objects.filter(event="request.refusals_suppressed").order_by("seq")]


def _actor_key() -> str:
    key = ScopedAPIKey.objects.get(name="test-trade")
    return f"api_key:{key.name} ({key.prefix})"


def test_the_housekeeping_chore_writes_a_finished_window_without_another_refusal(api_client, monkeypatch):
    _flood(api_client, 40)
    assert AuditEntry.objects.filter(event="request.refused").count() == 30
    (chore,) = [c for c in events.chores() if c.name == "orders.refusals_flush"]
    assert chore.every_s <= 10
    chore.run()
    assert _summaries() == []  # the minute is not over: the count goes on
    monkeypatch.setattr(refusals, "_window_started", time.monotonic() - 60)
    chore.run()
    assert _summaries() == [{"suppressed_by_actor": {_actor_key(): 10}, "window_s": 60}]
    chore.run()  # written once
    assert len(_summaries()) == 1
    entry = AuditEntry.objects.get(event="request.refusals_suppressed")
    assert (entry.actor_kind, entry.target_type) == ("system", "order_request")


def test_stopping_the_broker_runtime_writes_the_count(ib_runtime, api_client):
    _flood(api_client, 33)
    assert _summaries() == []
    runtime.stop()
    assert _summaries() == [{"suppressed_by_actor": {_actor_key(): 3}, "window_s": 60}]
    _flood(api_client, 1)  # the window goes on: still over the bound, counted again
    assert AuditEntry.objects.filter(event="request.refused").count() == 30


@pytest.mark.parametrize("path", ["/api/v1/orders/", "/api/v1/trading/halt/"])
def test_a_session_post_refused_for_its_missing_csrf_token_is_audited_as_anonymous(path):
    """The refusal comes before anyone is authenticated: nobody is named, not a user with an empty name."""
    get_user_model().objects.create_user(username="operator", password="a-long-password-1", is_staff=True)
    browser = Client(enforce_csrf_checks=True)  # as a cross-site form would post, with the session cookie
    assert browser.login(username="operator", password="a-long-password-1")
    response = browser.post(path, {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    (entry,) = AuditEntry.objects.filter(event="request.refused")
    assert (entry.actor_kind, entry.actor_label, entry.source) == ("anonymous", "anonymous", "rest")
    assert "CSRF" in entry.data["message"]
