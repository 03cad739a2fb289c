"""The fast read lane answers polled reads exactly as the full stack does, and hands everything else to it.

Requests are real ASGI calls into the real Django application (the one `ibkrgw.asgi` serves),
with the IB runtime connected to the simulated gateway over TCP.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from ibkrgw.fastlane import FastLane
from ibkrgw.models import ScopedAPIKey
from tests.asgi import asgi_call
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

VOLATILE = {"x-correlation-id", "content-length"}


class CountingApp:
    """The Django application (from the `pooled_app` fixture), counting the requests that reach it."""

    def __init__(self, app) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        await self.app(scope, receive, send)


async def get(app, path: str, *, query: bytes = b"", headers: list[tuple[bytes, bytes]] = ()) -> tuple:
    return await asgi_call(app, "GET", path, query=query, headers=headers)


@pytest.fixture
def lane(ib_runtime, pooled_app):
    django_app = CountingApp(pooled_app())
    fast = FastLane(django_app)
    yield fast, django_app
    fast.shutdown()


@pytest.fixture
def secret(transactional_db):
    return ScopedAPIKey.objects.create_key(name="lane", scope="read")[1]


def _auth(secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Api-Key {secret}".encode())]


def _same_shape(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_shape(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) or a is None or b is None


@pytest.mark.parametrize(
    ("path", "query", "stable"),
    [
        ("/api/v1/quotes/AAPL/", b"", ("symbol", "con_id", "contract", "source", "market_data_type", "delayed")),
        ("/api/v1/quotes/AAPL/", b"stream=true", ("symbol", "con_id", "contract", "source", "market_data_type")),
        ("/api/v1/account/summary/", b"", ("account",)),
        ("/api/v1/account/positions/", b"", ()),
        ("/api/v1/account/pnl/", b"", ("account",)),
        ("/api/v1/health/", b"", ("status", "trading_mode", "orders_enabled", "trading_halted", "database")),
    ],
)
async def test_the_lane_answers_as_the_full_stack_does(lane, secret, ib_runtime, path, query, stable):
    fast, django_app = lane
    warm = await get(fast, path, query=query, headers=_auth(secret))  # resolves, subscribes, verifies the key
    assert warm[0] == 200, warm
    if query == b"stream=true":  # the held stream serves from memory once its first tick has arrived
        await asyncio.to_thread(wait_for, lambda: ib_runtime.adapter.quote_cached(con_id=265598), message="a tick")
    before = django_app.calls
    for _ in range(2):  # the second may reuse what the first rendered
        status, headers, body = await get(fast, path, query=query, headers=_auth(secret))
    assert django_app.calls == before, "the full stack answered a request the lane should have"
    full_status, full_headers, full_body = await get(django_app.app, path, query=query, headers=_auth(secret))
    assert status == full_status == 200
    assert {k: v for k, v in headers.items() if k not in VOLATILE} == {
        k: v for k, v in full_headers.items() if k not in VOLATILE
    }
    assert _same_shape(body, full_body)
    for name in stable:
        assert body[name] == full_body[name], name
    if path.endswith("positions/"):
        assert [p["contract"] for p in body] == [p["contract"] for p in full_body]


async def test_the_correlation_id_is_echoed_or_generated(lane, secret):
    fast, _ = lane
    await get(fast, "/api/v1/health/", headers=_auth(secret))
    mine = await get(fast, "/api/v1/health/", headers=[*_auth(secret), (b"x-correlation-id", b"abc-123")])
    assert mine[1]["x-correlation-id"] == "abc-123"
    unsafe = await get(fast, "/api/v1/health/", headers=[*_auth(secret), (b"x-correlation-id", b"a b\nc")])
    assert unsafe[1]["x-correlation-id"] not in ("", "a b\nc") and len(unsafe[1]["x-correlation-id"]) == 32


async def test_anything_unusual_goes_to_the_full_stack(lane, secret):
    fast, django_app = lane
    await get(fast, "/api/v1/quotes/AAPL/", headers=_auth(secret))
    before = django_app.calls
    # An unknown parameter: the full stack's validation answers.
    status, _, body = await get(fast, "/api/v1/quotes/AAPL/", query=b"colour=red", headers=_auth(secret))
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    # No credentials, a wrong key, the browsable API: the full stack answers.
    assert (await get(fast, "/api/v1/quotes/AAPL/"))[0] == 401
    assert (await get(fast, "/api/v1/quotes/AAPL/", headers=_auth(secret + "x")))[0] == 401
    html = await get(fast, "/api/v1/health/", headers=[(b"accept", b"text/html")])
    assert html[1]["content-type"].startswith("text/html")
    assert django_app.calls == before + 4


async def test_a_revoked_key_is_refused_at_once(lane, transactional_db):
    fast, _ = lane
    key, secret = await sync_to_async(ScopedAPIKey.objects.create_key)(name="soon-revoked", scope="read")
    assert (await get(fast, "/api/v1/account/positions/", headers=_auth(secret)))[0] == 200
    key.revoked = True
    await sync_to_async(key.save)()
    status, headers, body = await get(fast, "/api/v1/account/positions/", headers=_auth(secret))
    assert (status, body["error"]["code"]) == (401, "not_authenticated")


async def test_the_lane_and_the_full_stack_share_one_throttle_window(lane, secret, settings):
    fast, django_app = lane
    settings.API_READ_RATE = "3/min"
    statuses = [(await get(fast, "/api/v1/account/summary/", headers=_auth(secret)))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    status, headers, body = await get(fast, "/api/v1/account/summary/", headers=_auth(secret))
    assert (status, body["error"]["code"]) == (429, "throttled") and int(headers["retry-after"]) > 0


async def test_broker_errors_have_the_rest_shape(lane, secret, ib_runtime):
    fast, django_app = lane
    await get(fast, "/api/v1/quotes/AAPL/", headers=_auth(secret))
    ib_runtime.worker.state = "reconnecting"
    try:
        before = django_app.calls
        status, headers, body = await get(fast, "/api/v1/quotes/AAPL/", headers=_auth(secret))
        assert django_app.calls == before
        full = await get(django_app.app, "/api/v1/quotes/AAPL/", headers=_auth(secret))
    finally:
        ib_runtime.worker.state = "connected"
    assert status == full[0] == 503
    assert body == full[2] and body["error"]["code"] == "broker_unavailable"


async def test_lane_answers_are_counted_in_the_request_metrics(lane, secret):
    from prometheus_client import REGISTRY

    fast, django_app = lane
    name = "django_http_responses_total_by_status_view_method_total"
    labels = {"status": "200", "view": "account-summary", "method": "GET"}
    await get(fast, "/api/v1/account/summary/", headers=_auth(secret))
    before = REGISTRY.get_sample_value(name, labels) or 0
    calls = django_app.calls
    await get(fast, "/api/v1/account/summary/", headers=_auth(secret))
    assert django_app.calls == calls
    assert REGISTRY.get_sample_value(name, labels) == before + 1


async def test_health_without_credentials_is_answered_by_the_lane(lane):
    fast, django_app = lane
    await get(fast, "/api/v1/health/")  # probes the database once
    calls = django_app.calls
    status, headers, body = await get(fast, "/api/v1/health/")
    assert django_app.calls == calls
    full = await get(django_app.app, "/api/v1/health/")
    assert status == full[0] == 200 and body["gateway"]["state"] == full[2]["gateway"]["state"] == "connected"
    # Both leave out what identifies the account and the gateway, and answer in the same shape.
    assert "accounts" not in body["gateway"] and "address" not in body["gateway"]
    assert _same_shape(body, full[2])
    # A session cookie means a signed-in person: the full stack's session authentication answers.
    await get(fast, "/api/v1/health/", headers=[(b"cookie", b"sessionid=abc")])
    assert django_app.calls == calls + 1


async def test_callers_without_a_key_are_throttled_by_address(lane, settings):
    fast, _ = lane
    settings.API_READ_RATE = "3/min"
    forwarded = [(b"x-forwarded-for", b"198.51.100.7")]
    statuses = [(await get(fast, "/api/v1/health/", headers=forwarded))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert (await get(fast, "/api/v1/health/", headers=[(b"x-forwarded-for", b"198.51.100.8")]))[0] == 200
