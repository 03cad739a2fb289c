"""The order lane places a program's orders exactly as the full stack does, and hands everything else to it.

Requests are real ASGI calls into the real Django application, with the IB runtime connected to
the simulated gateway over TCP and the ledger in the test database.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from audit import events
from audit.models import AuditEntry
from ibkrgw.models import ScopedAPIKey
from ibkrgw.orderlane import ROUTE, OrderLane
from orders.models import Order
from tests.asgi import asgi_call
from tests.ibkrgw.test_fastlane import VOLATILE, CountingApp

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = {"symbol": "MSFT", "action": "BUY", "quantity": "2", "order_type": "MKT"}


async def post(app, body, *, query: bytes = b"", headers: list[tuple[bytes, bytes]] = (), parts: int = 1) -> tuple:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    framing = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    return await asgi_call(app, "POST", ROUTE, query=query, headers=[*framing, *headers], body=raw, parts=parts)


@pytest.fixture
def lane(ib_runtime, pooled_app):
    django_app = CountingApp(pooled_app())
    return OrderLane(django_app, executor=django_app.app.executor), django_app


@pytest.fixture
def trade_key(transactional_db):
    return ScopedAPIKey.objects.create_key(name="lane", scope="trade")[1]


def auth(secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Api-Key {secret}".encode())]


async def _warm(lane, secret: str) -> None:
    """The first request with a key verifies it through the full stack; the lane trusts it afterwards."""
    fast, _ = lane
    status, _, body = await post(fast, {**ORDER, "client_order_id": "warm"}, headers=auth(secret))
    assert status == 201, body


def _entries(event: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(event=event).order_by("seq"))


async def test_an_order_is_placed_by_the_lane_as_the_full_stack_places_it(lane, trade_key):
    fast, django_app = lane
    await _warm(lane, trade_key)
    calls = django_app.calls
    status, headers, body = await post(fast, {**ORDER, "client_order_id": "lane-1"}, headers=auth(trade_key))
    assert django_app.calls == calls, "the full stack answered an order the lane should have"
    # A query string sends the same order through the full stack, which ignores it.
    full_status, full_headers, full_body = await post(
        django_app.app, {**ORDER, "client_order_id": "full-1"}, query=b"x=1", headers=auth(trade_key)
    )
    assert status == full_status == 201
    assert {k: v for k, v in headers.items() if k not in VOLATILE} == {
        k: v for k, v in full_headers.items() if k not in VOLATILE
    }
    assert body.keys() == full_body.keys()
    assert body["status"] == full_body["status"] == "simulated"
    assert body["quantity"] == "2" and body["client_order_id"] == "lane-1"
    order = await sync_to_async(Order.objects.get)(pk=body["id"])
    assert order.source == "rest" and order.actor_label.startswith("lane (")
    assert order.correlation_id == headers["x-correlation-id"]


async def test_the_same_key_twice_answers_the_first_order(lane, trade_key):
    fast, django_app = lane
    await _warm(lane, trade_key)
    first = await post(fast, {**ORDER, "client_order_id": "again"}, headers=auth(trade_key))
    second = await post(fast, {**ORDER, "client_order_id": "again"}, headers=auth(trade_key))
    assert (first[0], second[0]) == (201, 200)
    assert first[2]["id"] == second[2]["id"]
    reused = await post(fast, {**ORDER, "quantity": "3", "client_order_id": "again"}, headers=auth(trade_key))
    assert reused[0] == 422 and reused[2]["error"]["code"] == "idempotency_key_reused"
    header = await post(fast, ORDER, headers=[*auth(trade_key), (b"idempotency-key", b"again")])
    assert header[0] == 200 and header[2]["id"] == first[2]["id"]
    assert await sync_to_async(Order.objects.filter(client_order_id="again").count)() == 1


async def test_a_blocked_order_gets_the_full_stacks_error_and_one_audit_entry(lane, trade_key, settings):
    fast, django_app = lane
    await _warm(lane, trade_key)
    settings.RISK_MAX_ORDER_QUANTITY = 10
    before = len(await sync_to_async(_entries)(events.GATE_BLOCKED))
    calls = django_app.calls
    status, headers, body = await post(
        fast, {**ORDER, "quantity": "11", "client_order_id": "big"}, headers=auth(trade_key)
    )
    assert django_app.calls == calls
    too_big = {**ORDER, "quantity": "11", "client_order_id": "big-full"}
    full = await post(django_app.app, too_big, query=b"x=1", headers=auth(trade_key))
    assert status == full[0] == 422
    assert body["error"]["code"] == full[2]["error"]["code"] == "risk_max_quantity"
    blocked = await sync_to_async(_entries)(events.GATE_BLOCKED)
    assert len(blocked) == before + 2
    assert blocked[-2].target_id == "big" and blocked[-2].correlation_id == headers["x-correlation-id"]
    assert not await sync_to_async(Order.objects.filter(client_order_id="big").exists)()


async def test_a_halt_refuses_lane_orders_with_423(lane, trade_key):
    from ibkrgw.actors import Actor
    from orders.services import trading_halt

    fast, _ = lane
    await _warm(lane, trade_key)
    await sync_to_async(trading_halt)(actor=Actor.system(), reason="test")
    status, _, body = await post(fast, {**ORDER, "client_order_id": "halted"}, headers=auth(trade_key))
    assert status == 423 and body["error"]["code"] == "trading_halted"
    assert not await sync_to_async(Order.objects.filter(client_order_id="halted").exists)()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**ORDER, "colour": "red"}, "invalid_request"),  # an unknown field
        ({"symbol": "MSFT", "action": "BUY", "order_type": "MKT"}, "invalid_request"),  # no quantity
        ({**ORDER, "quantity": "-1"}, "invalid_request"),
        (b"[1, 2]", "invalid_request"),
        (b"{not json", "invalid_request"),
        (b'{"a": NaN}', "invalid_request"),
    ],
)
async def test_a_refused_body_is_answered_and_audited_by_the_full_stack(lane, trade_key, body, code):
    fast, django_app = lane
    await _warm(lane, trade_key)
    before = len(await sync_to_async(_entries)(events.REQUEST_REFUSED))
    calls = django_app.calls
    status, _, answer = await post(fast, body, headers=auth(trade_key))
    assert django_app.calls == calls + 1
    assert status == 400 and answer["error"]["code"] == code
    assert len(await sync_to_async(_entries)(events.REQUEST_REFUSED)) == before + 1


async def test_a_service_refusal_leaves_one_audit_entry_through_either_door(lane, trade_key):
    fast, django_app = lane
    await _warm(lane, trade_key)
    before = len(await sync_to_async(_entries)(events.REQUEST_REFUSED))
    status, _, answer = await post(fast, {**ORDER, "symbol": "NOSUCHSYM"}, headers=auth(trade_key))
    full = await post(django_app.app, {**ORDER, "symbol": "NOSUCHSYM"}, query=b"x=1", headers=auth(trade_key))
    assert status == full[0] and answer["error"]["code"] == full[2]["error"]["code"]
    assert 400 <= status < 500
    refused = await sync_to_async(_entries)(events.REQUEST_REFUSED)
    blocked = await sync_to_async(_entries)(events.GATE_BLOCKED)
    # Each door leaves exactly one entry for it, whichever of the two kinds the service chose.
    assert len(refused) - before + len([e for e in blocked if e.data["request"]["symbol"] == "NOSUCHSYM"]) == 2


async def test_anything_unusual_goes_to_the_full_stack(lane, trade_key, transactional_db):
    fast, django_app = lane
    await _warm(lane, trade_key)
    read_key = await sync_to_async(lambda: ScopedAPIKey.objects.create_key(name="reader", scope="read")[1])()
    unusual = [
        ({"headers": auth(read_key)}, 403),  # not yet verified in this process
        ({"headers": auth(read_key)}, 403),  # verified now, but its scope is read
        ({"headers": [*auth(trade_key), *auth(trade_key)]}, None),  # a header given twice
        ({"headers": [*auth(trade_key), (b"cookie", b"sessionid=abc")]}, None),
        ({"headers": [*auth(trade_key), (b"accept", b"text/html")]}, None),
        ({"headers": auth(trade_key), "query": b"dry=1"}, None),
        ({"headers": [*auth(trade_key), (b"x-correlation-id", b"a"), (b"x-correlation-id", b"b")]}, None),
        ({"headers": [(b"authorization", b"Api-Key nope.nope")]}, 401),
        ({"headers": [(b"authorization", b"Bearer x")]}, 401),
    ]
    for n, (kwargs, expected) in enumerate(unusual):
        calls = django_app.calls
        status, _, body = await post(fast, {**ORDER, "client_order_id": f"unusual-{n}"}, **kwargs)
        assert django_app.calls == calls + 1, kwargs
        if expected is not None:
            assert status == expected, (kwargs, body)
    assert status != 500


async def test_lane_orders_are_counted_in_the_request_metrics(lane, trade_key):
    from prometheus_client import REGISTRY

    fast, django_app = lane
    await _warm(lane, trade_key)
    name = "django_http_responses_total_by_status_view_method_total"
    labels = {"status": "201", "view": "order-list", "method": "POST"}
    before = REGISTRY.get_sample_value(name, labels) or 0
    calls = django_app.calls
    await post(fast, {**ORDER, "client_order_id": "counted"}, headers=auth(trade_key))
    assert django_app.calls == calls
    assert REGISTRY.get_sample_value(name, labels) == before + 1


async def test_a_body_in_parts_is_placed_by_the_lane(lane, trade_key):
    fast, django_app = lane
    await _warm(lane, trade_key)
    calls = django_app.calls
    status, _, body = await post(fast, {**ORDER, "client_order_id": "parts"}, headers=auth(trade_key), parts=3)
    assert django_app.calls == calls
    assert status == 201 and body["client_order_id"] == "parts"


async def test_a_revoked_key_places_nothing_through_the_lane(lane, trade_key):
    fast, django_app = lane
    await _warm(lane, trade_key)
    key = await sync_to_async(ScopedAPIKey.objects.get)(prefix=trade_key.split(".")[0])
    key.revoked = True  # as the admin revokes it
    await sync_to_async(key.save)()
    status, _, body = await post(fast, {**ORDER, "client_order_id": "revoked"}, headers=auth(trade_key))
    assert status == 401 and body["error"]["code"] == "not_authenticated"
    assert not await sync_to_async(Order.objects.filter(client_order_id="revoked").exists)()


async def test_a_fault_before_the_order_is_placed_hands_it_to_the_full_stack(lane, trade_key, monkeypatch):
    from orders.api import OrderCreateInput

    fast, django_app = lane
    await _warm(lane, trade_key)

    def broken(self):
        raise RuntimeError("a bug in the lane's own steps")

    monkeypatch.setattr(OrderCreateInput, "to_request", broken)
    calls = django_app.calls
    status, _, body = await post(fast, {**ORDER, "client_order_id": "fault"}, headers=auth(trade_key))
    assert django_app.calls == calls + 1  # the full stack answered (with the same bug: a 500 in the error shape)
    assert status == 500 and body["error"]["code"] == "internal_error"
    assert not await sync_to_async(Order.objects.filter(client_order_id="fault").exists)()
