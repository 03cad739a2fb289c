"""The reads programs poll, answered on the web server's event loop before Django.

`GET quotes/{symbol}/`, `account/summary/`, `account/positions/`, `account/pnl/` and `health/` cost a client a few
broker round trips at most, while the full stack (Django's middleware adapted to ASGI, a worker
thread per request, DRF's request and serializer set-up) cost twenty times that. When a request is
one this lane can answer exactly as the full stack would, it answers it here, with no thread hop:

- GET, no script prefix, an allowed Host, JSON accepted (no browsable API), no query parameter
  other than `stream` on quotes;
- an `Authorization: Api-Key` verified within API_KEY_CACHE_S (`ibkrgw.auth`), or, for health
  only, no credentials at all (health is open to load balancers);
- the contract already resolved in this process, the IB connection owned by this process, a
  health probe younger than its age limit;
- the same read throttle window (`ReadRateThrottle`), correlation id (header, contextvar for
  logs), Prometheus request metrics, security headers, serializers and error shape.

Anything else (a new key, a session, a first `stream=true`, throttled, a follower process, any
unusual input) goes to Django unchanged, which answers it and warms the caches this lane uses.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from ibkrgw.actors import correlation_id_var
from ibkrgw.errors import GatewayError, retry_after
from ibkrgw.middleware import _SAFE_ID
from ibkrgw.web.handler import DatabaseThreadPool
from ibkrgw.web.render import render_json

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("django.request")

PREFIX = "/api/v1/"
# A plain ticker: anything else (spaces, %-escapes, long names) gets the full stack's validation.
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.]{0,11}$")
_STREAM = {b"": False, b"stream=true": True, b"stream=false": False, b"stream=1": True, b"stream=0": False}
_JSON_ACCEPT = {None, b"*/*", b"application/json"}
# Refresh health's database probe in the background once it is this old (it serves until HEALTH_PROBE_S).
PROBE_REFRESH_AFTER_S = 0.5

Plan = Callable[[], Awaitable[Any]]


class Lane:
    """What every lane before Django shares: the Host check, the correlation id, the response
    headers and the request metrics of the full stack."""

    method = "GET"
    allow = b"GET, HEAD, OPTIONS"

    def __init__(self, app) -> None:
        self.app = app
        self._hosts: dict[bytes, bool] = {}
        self._metrics: dict[tuple[str, int], tuple] = {}

    def _host_ok(self, host: bytes | None) -> bool:
        if host is None:
            return False
        ok = self._hosts.get(host)
        if ok is None:
            domain, _port = split_domain_port(host.decode("latin-1"))
            ok = bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
            if len(self._hosts) < 1000:
                self._hosts[host] = ok
        return ok

    @staticmethod
    def _correlation_id(headers: dict[bytes, bytes]) -> str:
        supplied = headers.get(b"x-correlation-id", b"").decode("latin-1")
        return supplied if _SAFE_ID.match(supplied) else uuid.uuid4().hex

    async def _respond(self, send, status: int, body: bytes, cid: str, extra: list[tuple[bytes, bytes]]) -> None:
        """The answer with the headers the full stack sends with the same JSON."""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"vary", b"Accept"),
                    (b"allow", self.allow),
                    *extra,
                    (b"x-frame-options", b"DENY"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"x-correlation-id", cid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _count(self, view: str, status: int, size_in: int, size_out: int, seconds: float) -> None:
        """The request metrics django-prometheus's middleware records for the same request."""
        children = self._metrics.get((view, status))
        if children is None:
            from django_prometheus.middleware import Metrics

            m = Metrics.get_instance()
            method = self.method
            children = self._metrics[(view, status)] = (
                m.requests_total,
                m.responses_total,
                m.requests_latency_before,
                m.requests_by_method.labels(method=method),
                m.requests_by_transport.labels(transport="http"),
                m.requests_body_bytes,
                m.requests_by_view_transport_method.labels(view=view, transport="http", method=method),
                m.responses_by_status.labels(status=str(status)),
                m.responses_by_status_view_method.labels(status=str(status), view=view, method=method),
                m.responses_by_charset.labels(charset="utf-8"),
                m.responses_body_bytes,
                m.requests_latency_by_view_method.labels(view=view, method=method),
            )
        (total, responses, latency_before, by_method, by_transport, body_in, by_view, by_status, by_status_view,
         by_charset, body_out, latency) = children  # fmt: skip
        for counter in (total, responses, by_method, by_transport, by_view, by_status, by_status_view, by_charset):
            counter.inc()
        body_in.observe(size_in)
        body_out.observe(size_out)
        latency_before.observe(seconds)
        latency.observe(seconds)


class FastLane(Lane):
    def __init__(self, app) -> None:
        super().__init__(app)
        self._serializers: dict[str, Any] = {}
        self._rendered: dict[tuple[str, str], tuple[tuple, bytes]] = {}
        self._probe_executor = DatabaseThreadPool(max_workers=1, thread_name_prefix="health-probe")
        self._probe_refreshing = False

    def shutdown(self) -> None:
        """Stop the health probe's thread and close its database connection (tests build a lane each)."""
        self._probe_executor.shutdown()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return await self.app(scope, receive, send)
        started = False

        async def sending(message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            answered = await self._serve(scope, sending, path[len(PREFIX) :])
        except Exception:
            if started:  # the answer is half sent: nothing else can be said on this request
                raise
            # A bug here must not cost the caller an answer (reads are safe to ask again).
            logger.exception("fast read lane failed; answering through the full stack")
            answered = False
        if not answered:
            await self.app(scope, receive, send)

    # -- routing -----------------------------------------------------------------------------
    def _plan(self, route: str, query: bytes, key) -> tuple[str, Plan] | None:
        """(view name, coroutine making the payload), or None when the full stack must answer."""
        from brokers import runtime

        if route == "health/":
            if query != b"" or self._probe() is None:
                return None
            return "health", lambda: self._health(public=key is None)
        if key is None:
            return None
        rt = runtime.current()
        if rt is None or not rt.owner or not hasattr(rt.adapter, "positions_async"):
            return None
        if route.startswith("quotes/") and route.endswith("/"):
            symbol = route[len("quotes/") : -1]
            stream = _STREAM.get(query)
            if stream is None or not _SYMBOL.match(symbol):
                return None
            return self._quote_plan(rt.adapter, symbol, stream)
        if query != b"":
            return None
        if route == "account/summary/":
            return "account-summary", lambda: self._account(rt.adapter, "summary")
        if route == "account/positions/":
            return "account-positions", lambda: self._account(rt.adapter, "positions")
        if route == "account/pnl/":
            return "account-pnl", lambda: self._account(rt.adapter, "pnl")
        return None

    # -- the reads ---------------------------------------------------------------------------
    def _quote_plan(self, adapter, symbol: str, stream: bool) -> tuple[str, Plan] | None:
        from brokers.adapter import ContractSpec
        from marketdata.services import contract_resolve_one_memory

        contract = contract_resolve_one_memory(spec=ContractSpec(symbol=symbol))
        if contract is None:
            return None
        cached = adapter.quote_cached(con_id=contract.con_id)
        if cached is None and stream:
            return None  # the first stream=true sets up the hold through the full stack

        async def quote():
            from marketdata.payloads import quote_record

            quote = cached if cached is not None else await adapter.quote_snapshot_async(contract=contract)
            return self._serializer("quote").to_representation(quote_record(contract, quote))

        return "quote", quote

    async def _account(self, adapter, read: str):
        from brokers.adapter import as_dict
        from brokers.selectors import account_resolve

        account = account_resolve(None)
        if read == "summary":
            result = await adapter.account_summary_async(account=account)
            source: tuple = (result,)
        elif read == "pnl":
            result = await adapter.pnl_async(account=account)
            source = (result,)
        else:
            result = await adapter.positions_async(account=account)
            source = tuple(result)
        # While IB reports no change the adapter hands back the very same (frozen) objects: same bytes.
        hit = self._rendered.get((read, account))
        if hit is not None and len(hit[0]) == len(source) and all(a is b for a, b in zip(hit[0], source, strict=True)):
            return hit[1]
        if read == "summary":
            payload = {"account": result.account, "values": [as_dict(v) for v in result.values]}
            data = self._serializer("account-summary").to_representation(payload)
        elif read == "pnl":
            data = self._serializer("account-pnl").to_representation(as_dict(result))
        else:
            rows = [{**as_dict(p), "contract": as_dict(p.contract)} for p in result]
            data = self._serializer("account-positions").to_representation(rows)
        body = render_json(data)
        self._rendered[(read, account)] = (source, body)
        return body

    async def _health(self, *, public: bool):
        from brokers.selectors import health_get, health_public

        health = health_get(self._probe())
        return self._serializer("health").to_representation(health_public(health) if public else health)

    def _probe(self) -> dict | None:
        """Health's database probe if fresh; starts a background refresh as it ages."""
        from brokers.selectors import health_probe_age, health_probe_cached, health_probe_refresh

        age = health_probe_age()
        if age is not None and age > PROBE_REFRESH_AFTER_S and not self._probe_refreshing:
            self._probe_refreshing = True

            def refresh() -> None:
                try:
                    health_probe_refresh()
                finally:
                    self._probe_refreshing = False

            self._probe_executor.submit(refresh)
        return health_probe_cached()

    def _serializer(self, view: str):
        # One bound instance per output: building DRF fields per request costs more than the read.
        serializer = self._serializers.get(view)
        if serializer is None:
            from brokers.payloads import AccountSummaryOutput, HealthOutput, PnLOutput, PositionOutput
            from marketdata.payloads import QuoteOutput

            serializer = {
                "quote": lambda: QuoteOutput(),
                "account-summary": lambda: AccountSummaryOutput(),
                "account-positions": lambda: PositionOutput(many=True),
                "account-pnl": lambda: PnLOutput(),
                "health": lambda: HealthOutput(),
            }[view]()
            self._serializers[view] = serializer
        return serializer

    # -- one request -------------------------------------------------------------------------
    async def _serve(self, scope, send, route: str) -> bool:
        from ibkrgw.auth import ReadRateThrottle, api_key_in_header_cached

        headers = dict(scope["headers"])
        if headers.get(b"accept") not in _JSON_ACCEPT or not self._host_ok(headers.get(b"host")):
            return False
        authorization = headers.get(b"authorization")
        key = None
        if authorization is not None:
            key = api_key_in_header_cached(authorization)
            if key is None:
                return False
        elif b"cookie" in headers:
            return False  # a signed-in person: the full stack's session authentication
        query: bytes = scope.get("query_string", b"")  # escaped forms of `stream` go to the full stack
        plan = self._plan(route, query, key)
        if plan is None:
            return False
        view, make = plan
        started = time.perf_counter()
        throttle = ReadRateThrottle()
        client = scope.get("client") or ("", 0)
        caller = SimpleNamespace(
            method="GET", auth=key, user=None, META={"REMOTE_ADDR": client[0]}, headers=_forwarded_for(scope, headers)
        )
        if not throttle.allow_request(caller, None):
            return False  # the full stack answers 429 with Retry-After from the same window
        cid = self._correlation_id(headers)
        token = correlation_id_var.set(cid)
        extra: list[tuple[bytes, bytes]] = []
        try:
            try:
                status, data = 200, await make()
            except GatewayError as exc:
                status, data = exc.http_status, exc.as_dict()
                wait = retry_after(exc)
                if wait:
                    extra.append((b"retry-after", wait.encode()))
                log = request_logger.error if status >= 500 else request_logger.warning
                log("%s: %s", HTTPStatus(status).phrase, scope["path"], extra={"status_code": status})
        finally:
            correlation_id_var.reset(token)
        body = data if isinstance(data, bytes) else render_json(data)
        await self._respond(send, status, body, cid, extra)
        self._count(view, status, 0, len(body), time.perf_counter() - started)
        return True


def _forwarded_for(scope, headers: dict[bytes, bytes]) -> dict[str, str]:
    """The X-Forwarded-For header as Django reads it (repeated headers joined), for the throttle's ident."""
    if b"x-forwarded-for" not in headers:
        return {}
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    return {"x-forwarded-for": ",".join(values)}
