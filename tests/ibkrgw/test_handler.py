"""The HTTP handler runs each request in a pool thread: requests proceed side by side, answers are whole.

Real ASGI calls into the handler `ibkrgw.asgi` serves, with the IB runtime connected to the
simulated gateway over TCP where an order is placed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from audit import events
from audit.services import audit_record
from ibkrgw.actors import Actor
from ibkrgw.models import ScopedAPIKey
from orders.pipeline import pipeline
from tests.asgi import asgi_exchange
from tests.conftest import pipeline_queued, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


async def call(app, method: str, path: str, *, body: bytes = b"", headers=()) -> tuple[int, dict, bytes]:
    """(status, every header with all its values, body) of one request with its Content-Length."""
    length = [(b"content-length", str(len(body)).encode())]
    start, out = await asgi_exchange(app, method, path, body=body, headers=[*length, *headers])
    values: dict[str, list[str]] = {}
    for name, value in start["headers"]:
        values.setdefault(name.decode().lower(), []).append(value.decode("latin-1"))
    return start["status"], values, out


def key(scope: str) -> list[tuple[bytes, bytes]]:
    secret = ScopedAPIKey.objects.create_key(name=f"handler-{scope}", scope=scope)[1]
    return [(b"authorization", f"Api-Key {secret}".encode()), (b"content-type", b"application/json")]


async def test_a_request_waiting_on_the_order_pipeline_holds_up_no_other_request(ib_runtime, pooled_app):
    app = pooled_app()
    trade, read = await sync_to_async(key)("trade"), await sync_to_async(key)("read")
    release, busy = threading.Event(), threading.Event()

    def occupy() -> None:
        busy.set()
        release.wait(30)

    blocker = threading.Thread(target=lambda: pipeline().run(occupy, timeout=60))
    blocker.start()
    try:
        await asyncio.to_thread(busy.wait, 10)
        order = {"client_order_id": "waits-1", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}
        placing = asyncio.create_task(
            call(app, "POST", "/api/v1/orders/", body=json.dumps(order).encode(), headers=trade)
        )
        # While the order waits its turn in the pipeline, reads through the same stack are answered.
        for path in ("/api/v1/orders/", "/api/v1/fills/", "/api/v1/audit/"):
            status, _, body = await asyncio.wait_for(call(app, "GET", path, headers=read), 20)
            assert status == 200, (path, body)
        listed = json.loads((await call(app, "GET", "/api/v1/orders/", headers=read))[2])
        assert listed["count"] == 0
        assert not placing.done()
    finally:
        release.set()
        await asyncio.to_thread(blocker.join, 30)
    status, headers, body = await asyncio.wait_for(placing, 30)
    assert status == 201, body
    assert json.loads(body)["client_order_id"] == "waits-1"
    assert headers["content-type"] == ["application/json"]


async def test_a_streamed_export_arrives_whole_and_cookies_and_headers_reach_the_client(django_user_model, pooled_app):
    app = pooled_app()

    def setup() -> str:
        for n in range(3):
            from django.db import transaction

            with transaction.atomic():
                audit_record(event=events.BROKER_CONNECTED, actor=Actor.system(), data={"n": n})
        user = django_user_model.objects.create_superuser("root", "", "handler-test-pw-1")
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    session = await sync_to_async(setup)()
    status, headers, body = await call(
        app, "GET", "/admin/audit/auditentry/export.csv", headers=[(b"cookie", f"sessionid={session}".encode())]
    )
    assert status == 200, body
    assert headers["content-type"] == ["text/csv; charset=utf-8"]
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert len(rows) == 1 + 3 and "event" in rows[0]

    status, headers, body = await call(app, "GET", "/admin/login/")
    assert status == 200
    assert any(cookie.startswith("csrftoken=") for cookie in headers["set-cookie"])
    assert headers["x-frame-options"] == ["DENY"]
    assert b"csrfmiddlewaretoken" in body


async def test_bad_requests_get_the_error_shape_through_the_pool(pooled_app):
    app = pooled_app()
    trade = await sync_to_async(key)("trade")
    status, headers, body = await call(app, "POST", "/api/v1/orders/", body=b"{not json", headers=trade)
    assert status == 400
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_request" and "fields" not in error.get("details", {}), error
    assert headers["x-correlation-id"]
    status, _, body = await call(app, "GET", "/api/v1/no-such-thing/", headers=trade)
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


async def test_a_halt_does_not_wait_for_a_thread_behind_the_orders_it_stops(ib_runtime, pooled_app):
    app = pooled_app(threads=2)  # two order requests fill it
    trade = await sync_to_async(key)("trade")
    release, busy = threading.Event(), threading.Event()
    blocker = threading.Thread(target=lambda: pipeline().run(lambda: (busy.set(), release.wait(30)), timeout=60))
    blocker.start()

    def order(n: int):
        body = {"client_order_id": f"h-{n}", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}
        return asyncio.create_task(call(app, "POST", "/api/v1/orders/", body=json.dumps(body).encode(), headers=trade))

    try:
        await asyncio.to_thread(busy.wait, 10)
        placing = [order(1), order(2)]
        await asyncio.to_thread(wait_for, lambda: pipeline_queued() == 2, message="two orders queued")
        placing.append(order(3))  # no thread free: it waits for one
        await asyncio.to_thread(wait_for, lambda: app.executor._work_queue.qsize() == 1, message="third waits")
        halting = asyncio.create_task(
            call(app, "POST", "/api/v1/trading/halt/", body=b'{"reason": "stop"}', headers=trade)
        )
        await asyncio.to_thread(wait_for, lambda: pipeline_queued() == 3, message="the halt queued")
    finally:
        release.set()
        await asyncio.to_thread(blocker.join, 30)
    status, _, body = await asyncio.wait_for(halting, 30)
    assert status == 200, body
    answers = [await asyncio.wait_for(task, 30) for task in placing]
    assert [a[0] for a in answers[:2]] == [201, 201]  # admitted before the halt, in arrival order
    assert answers[2][0] == 423, answers[2][2]
    assert json.loads(answers[2][2])["error"]["code"] == "trading_halted"
