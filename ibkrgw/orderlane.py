"""`POST orders/` from a program, answered on the web server before Django's middleware and DRF's view.

Placing an order costs the gateway itself little in the request (the body's validation, the
stateless gates, the answer); the rest of the full stack (Django's middleware, DRF's request,
authentication, content negotiation and response set-up) cost as much again. When a request is
one this lane can answer exactly as the full stack would, it runs the same steps as
`OrderViewSet.create` in a worker thread of the same pool:

- POST to `/api/v1/orders/`, no query string, no script prefix, an allowed Host, `Content-Type:
  application/json`, JSON accepted, a declared body within REQUEST_MAX_BODY_BYTES;
- an `Authorization: Api-Key` with scope `trade` verified within API_KEY_CACHE_S (`ibkrgw.auth`),
  no cookie, no header the full stack would read given twice;
- a body that parses within the JSON limits and passes `OrderCreateInput`.

Then: the same service (`orders.services.order_submit`), with the same actor, correlation id and
Idempotency-Key; the same answer, error shape, Retry-After, audit of a refusal the service did not
record itself, request log line and Prometheus metrics. Anything else, a refused body included,
goes to Django unchanged (the body replayed), which answers it and audits the refusal; a request
is handed over only before the service has run, so nothing is ever done twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter
from concurrent.futures import Executor
from http import HTTPStatus
from typing import Any

from django.db import close_old_connections

from ibkrgw import limits
from ibkrgw.actors import correlation_id_var
from ibkrgw.errors import ErrorCode, GatewayError, retry_after
from ibkrgw.fastlane import _JSON_ACCEPT, Lane
from ibkrgw.web.render import render_json

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("django.request")

ROUTE = "/api/v1/orders/"
VIEW = "order-list"  # the route's name, as django-prometheus labels it
# Headers the full stack reads: given twice, Django would join them; the full stack decides then.
_SINGLE = (
    b"host",
    b"authorization",
    b"content-type",
    b"content-length",
    b"accept",
    b"idempotency-key",
    b"x-correlation-id",
)
Answer = tuple[int, Any, list[tuple[bytes, bytes]]]


class OrderLane(Lane):
    method = "POST"
    allow = b"GET, POST, HEAD, OPTIONS"

    def __init__(self, app, *, executor: Executor) -> None:
        super().__init__(app)
        self.executor = executor  # the full stack's request threads: one pool, one set of DB connections

    async def __call__(self, scope, receive, send) -> None:
        key = self._key(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if key is None:
            return await self.app(scope, receive, send)
        read = await limits.bounded_body(receive, limits.max_body_bytes())
        if read is None:  # longer than it declared: the full stack cannot read it either
            return await self.app(scope, receive, send)
        replay, _size = read
        messages = [await replay()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body"):
            messages.append(await replay())  # the body in parts, as a client's packets brought it
        if messages[-1]["type"] != "http.request":  # the client went away: the full stack's way
            return await self.app(scope, _prepend(messages, replay), send)
        body = b"".join(message.get("body", b"") for message in messages)
        headers = dict(scope["headers"])
        started = time.perf_counter()
        cid = self._correlation_id(headers)
        token = correlation_id_var.set(cid)
        try:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(
                self.executor, contextvars.copy_context().run, self._place, key, headers, body
            )
            if answer is not None and answer[0] >= 400:
                log = request_logger.error if answer[0] >= 500 else request_logger.warning
                log("%s: %s", HTTPStatus(answer[0]).phrase, ROUTE, extra={"status_code": answer[0]})
        finally:
            correlation_id_var.reset(token)
        if answer is None:
            return await self.app(scope, _prepend(messages, replay), send)
        status, data, extra = answer
        out = render_json(data)
        await self._respond(send, status, out, cid, extra)
        self._count(VIEW, status, len(body), len(out), time.perf_counter() - started)

    def _key(self, scope) -> Any:
        """The API key placing this order, when the lane can answer it; else None."""
        from ibkrgw.auth import api_key_in_header_cached
        from ibkrgw.models import Scope

        if scope["path"] != ROUTE or scope.get("root_path") or scope.get("query_string"):
            return None
        names = Counter(name for name, _ in scope["headers"])
        if b"cookie" in names or b"transfer-encoding" in names or any(names[name] > 1 for name in _SINGLE):
            return None
        headers = dict(scope["headers"])
        if headers.get(b"content-type") != b"application/json" or headers.get(b"accept") not in _JSON_ACCEPT:
            return None
        length = headers.get(b"content-length", b"")
        if not length.isdigit() or not 0 < int(length) <= limits.max_body_bytes():
            return None
        if not self._host_ok(headers.get(b"host")):
            return None
        key = api_key_in_header_cached(headers.get(b"authorization", b""))
        return key if key is not None and key.allows(Scope.TRADE) else None

    def _place(self, key, headers: dict[bytes, bytes], body: bytes) -> Answer | None:
        """`OrderViewSet.create`, in a request thread; None hands the request to the full stack."""
        close_old_connections()  # as Django does when a request starts and ends (CONN_MAX_AGE, broken links)
        try:
            return self._submit(key, headers, body)
        finally:
            close_old_connections()

    def _submit(self, key, headers: dict[bytes, bytes], body: bytes) -> Answer | None:
        from django.contrib.auth.models import AnonymousUser

        from ibkrgw.actors import Source
        from ibkrgw.auth import actor_for
        from orders import services
        from orders.api import OrderCreateInput
        from orders.payloads import order_output

        try:
            data = limits.loads(body)
            if not isinstance(data, dict):
                return None
            serializer = OrderCreateInput(data=data)
            if not serializer.is_valid():
                return None
            request = serializer.to_request()
            actor = actor_for(AnonymousUser(), key, Source.REST)
            key_header = headers[b"idempotency-key"].decode("latin-1") if b"idempotency-key" in headers else None
        except GatewayError:
            return None  # the full stack refuses it in the error shape, and audits the refusal
        except Exception:
            # Nothing has been done yet: a bug here must not cost the caller an answer.
            logger.exception("order lane failed before placing; answering through the full stack")
            return None
        try:
            result = services.order_submit(request=request, actor=actor, idempotency_key=key_header)
        except GatewayError as exc:
            services.refusal_audit(
                exc, status=exc.http_status, error=exc.as_dict()["error"], actor=actor, action="create", body=data
            )
            wait = retry_after(exc)
            return exc.http_status, exc.as_dict(), [(b"retry-after", wait.encode())] if wait else []
        except Exception:
            logger.exception("unhandled error in %s", "OrderViewSet")
            internal = {"error": {"code": str(ErrorCode.INTERNAL_ERROR), "message": "Internal error.", "details": {}}}
            return 500, internal, []
        return (200 if result.replayed else 201), order_output(result.order), []


def _prepend(messages: list[dict], receive):
    """A `receive` that gives `messages` first, then what `receive` gives."""
    pending = list(messages)

    async def replay() -> dict:
        return pending.pop(0) if pending else await receive()

    return replay
