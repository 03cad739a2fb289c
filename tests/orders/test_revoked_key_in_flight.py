"""An order in flight when its API key is revoked: once the revocation has answered, nothing it places is
admitted, however long the order waited for its turn in the order pipeline."""

from __future__ import annotations

import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from audit.models import AuditEntry
from orders.models import Order
from orders.pipeline import pipeline
from tests.conftest import wait_for
from tests.factories import api_key

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"client_order_id": "in-flight-1", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}


@pytest.fixture
def quiet_market(sim_gateway):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    return sim_gateway


def _placements_queued() -> int:
    waiting = pipeline()._queue
    with waiting.mutex:
        return sum(
            1
            for command in waiting.queue
            if getattr(command, "admit", None) and "order_submit" in command.admit.__qualname__
        )


def _as_key(secret: str, method: str, path: str, body: dict, answers: list) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    try:
        answers.append(getattr(client, method)(path, body, format="json"))
    finally:
        connection.close()


def _revoked_while_queued(key, secret: str, method: str, path: str, body: dict, queued):
    """The answer to a request made with `key` while the pipeline is busy (a slow broker call ahead): it passes
    authentication and its checks and waits its turn (`queued()`); then the key is revoked, and the pipeline
    goes on."""
    running, hold, answers = threading.Event(), threading.Event(), []
    threading.Thread(target=lambda: pipeline().run(lambda: (running.set(), hold.wait(30)))).start()
    wait_for(running.is_set, message="the pipeline is busy")
    asking = threading.Thread(target=_as_key, args=(secret, method, path, body, answers))
    asking.start()
    wait_for(lambda: queued() == 1, message="the request queued")

    call_command("apikey", "revoke", key.prefix, stdout=StringIO())  # the revocation answers
    hold.set()
    asking.join(30)
    (response,) = answers
    return response


def test_an_order_waiting_its_turn_when_its_key_is_revoked_is_refused(ib_runtime, quiet_market, settings):
    settings.API_KEY_CACHE_S = 300
    key, secret = api_key(scope="trade", name="bot")
    response = _revoked_while_queued(key, secret, "post", "/api/v1/orders/", BODY, _placements_queued)
    # Before: 201, the order recorded (and, armed, sent) after the key's revocation had answered.
    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "not_authenticated"
    assert not Order.objects.exists()
    # The refusal's audit entry commits with the pipeline's admission group, just after the answer.
    blocked = wait_for(lambda: AuditEntry.objects.filter(event="gate.blocked").first(), message="refusal audited")
    assert (blocked.actor_label, blocked.data["code"]) == (f"bot ({key.prefix})", "not_authenticated")


def test_an_order_admitted_before_the_revocation_stands(ib_runtime, quiet_market):
    key, secret = api_key(scope="trade")
    answers: list = []
    _as_key(secret, "post", "/api/v1/orders/", BODY, answers)
    assert answers[0].status_code == 201
    call_command("apikey", "revoke", key.prefix, stdout=StringIO())
    assert Order.objects.get().client_order_id == "in-flight-1"


def _modifications_queued() -> int:
    waiting = pipeline()._queue
    with waiting.mutex:
        return sum(
            1 for command in waiting.queue if command and "order_modify" in getattr(command.run, "__qualname__", "")
        )


def test_a_modification_waiting_its_turn_when_its_key_is_revoked_is_refused(
    ib_runtime, quiet_market, orders_enabled, api_client, settings
):
    settings.API_KEY_CACHE_S = 300
    key, secret = api_key(scope="trade", name="bot")
    resting = dict(BODY, client_order_id="in-flight-modify", order_type="LMT", limit_price="189.00")
    order_id = api_client.post("/api/v1/orders/", resting, format="json").json()["id"]
    wait_for(lambda: api_client.get(f"/api/v1/orders/{order_id}/").json()["status"] == "submitted", message="rests")
    path, change = f"/api/v1/orders/{order_id}/", {"quantity": "5"}
    response = _revoked_while_queued(key, secret, "patch", path, change, _modifications_queued)
    # Before: 200, the order's quantity raised to 5 at the broker after the key's revocation had answered.
    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "not_authenticated"
    assert [o.total_quantity for o in quiet_market.orders() if o.order_ref == "in-flight-modify"] == [1]
    assert api_client.get(f"/api/v1/orders/{order_id}/").json()["quantity"] == "1"
