"""A request body that declares no Content-Length (chunked) is bounded before the application buffers it.

Real ASGI calls into the real Django application, wrapped as `ibkrgw.asgi` serves it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from ibkrgw.limits import ChunkedBodyLimit
from ibkrgw.models import ScopedAPIKey

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 * 1024


async def post_chunked(app, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    pending = list(chunks)
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        if not pending:
            await asyncio.Event().wait()  # the client stays connected until the answer is sent
        body = pending.pop(0)
        read += len(body)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], json.loads(body), read


def _split(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_chunked_body_over_the_limit_is_413_and_the_rest_is_never_read(settings, pooled_app):
    settings.REQUEST_MAX_BODY_BYTES = 1024 * 1024
    app = ChunkedBodyLimit(pooled_app())
    chunks = _split(b" " * (10 * 1024 * 1024))
    status, body, read = await post_chunked(app, "/api/v1/orders/", chunks, [(b"content-type", b"application/json")])
    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert body["error"]["details"]["max_bytes"] == 1024 * 1024
    assert read <= 1024 * 1024 + CHUNK  # stopped at the limit, not after buffering 10 MB


async def test_a_chunked_order_within_the_limit_is_placed_whole(ib_runtime, pooled_app):
    _, secret = await sync_to_async(ScopedAPIKey.objects.create_key)(name="chunked", scope="trade")
    order = {"client_order_id": "chunked-1", "symbol": "AAPL", "action": "BUY", "quantity": "3", "order_type": "MKT"}
    chunks = _split(json.dumps(order).encode(), size=7)  # split mid-token: only the whole body parses
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Api-Key {secret}".encode())]
    status, body, _ = await post_chunked(ChunkedBodyLimit(pooled_app()), "/api/v1/orders/", chunks, headers)
    assert status == 201, body
    assert (body["client_order_id"], body["quantity"], body["status"]) == ("chunked-1", "3", "simulated")
