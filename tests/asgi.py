"""One real ASGI request to an application, as a client on one connection makes it."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def asgi_exchange(
    app,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | tuple = (),
    body: bytes = b"",
    parts: int = 1,
) -> tuple[dict, bytes]:
    """(the response's start message, its whole body); the request body is sent in `parts` messages."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    size = max(1, -(-len(body) // parts))
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected until the answer is sent

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body", False)  # a whole answer
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


async def asgi_call(app, method: str, path: str, **request: Any) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or raw bytes) of `asgi_exchange`."""
    start, out = await asgi_exchange(app, method, path, **request)
    headers_out = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    is_json = headers_out.get("content-type", "").startswith("application/json")
    return start["status"], headers_out, json.loads(out) if out and is_json else out
