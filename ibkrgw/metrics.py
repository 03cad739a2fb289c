"""Prometheus metrics (prometheus_client; served at /metrics by django-prometheus).

Counters are per process. Order counts by current status are read from the ledger at scrape time,
so they agree across processes.
"""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

ORDER_EVENTS = Counter("ibkrgw_order_events_total", "Order state transitions appended to the ledger.", ["status"])
GATE_BLOCKS = Counter("ibkrgw_gate_blocks_total", "Orders blocked by a pre-trade gate.", ["code"])
FILLS = Counter("ibkrgw_fills_total", "Executions recorded.")
WEBSOCKET_CLIENTS = Gauge("ibkrgw_websocket_clients", "Open websocket connections.", ["stream"])


def _worker():
    from brokers import runtime

    rt = runtime.current()
    return rt.worker if rt else None


BROKER_CONNECTED = Gauge("ibkrgw_broker_connected", "1 when the IB connection is up and reconciled.")
BROKER_CONNECTED.set_function(
    lambda: 1.0 if (w := _worker()) and w.state == "connected" and w.reconciled.is_set() else 0.0
)
BROKER_RECONNECTS = Gauge("ibkrgw_broker_reconnects", "Reconnects of the IB connection since start.")
BROKER_RECONNECTS.set_function(lambda: float(w.reconnects) if (w := _worker()) else 0.0)
QUOTE_SUBSCRIPTIONS = Gauge("ibkrgw_quote_subscriptions", "Market-data subscriptions held at the broker.")
QUOTE_SUBSCRIPTIONS.set_function(lambda: float(w.subscription_count()) if (w := _worker()) else 0.0)


class OrdersByStatusCollector:
    """`ibkrgw_orders{status=...}`: orders by their current status, from the database."""

    def describe(self):
        # Lets the registry learn the name without querying the database at start-up.
        yield GaugeMetricFamily("ibkrgw_orders", "Orders by current status.", labels=["status"])

    def collect(self):
        family = GaugeMetricFamily("ibkrgw_orders", "Orders by current status.", labels=["status"])
        try:
            from django.db.models import Count

            from orders.selectors import order_queryset

            rows = order_queryset().values("current_status").annotate(n=Count("id")).order_by()
            for row in rows:
                family.add_metric([row["current_status"] or "unknown"], row["n"])
        except Exception:  # a scrape must never fail because the database is busy
            logger.warning("could not count orders for /metrics", exc_info=True)
        yield family


_collector_registered = False


def register_collectors() -> None:
    global _collector_registered
    if not _collector_registered:
        REGISTRY.register(OrdersByStatusCollector())
        _collector_registered = True


def _loopback(address: str | None) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def metrics_view(request):
    """`/metrics` for Prometheus: loopback clients only, or, with METRICS_TOKEN set, any client sending
    `Authorization: Bearer <token>` (and only those)."""
    import hmac

    from django.conf import settings
    from django.http import JsonResponse
    from django_prometheus.exports import ExportToDjangoView

    from ibkrgw.errors import ErrorCode, GatewayError

    token = settings.METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
            error = GatewayError(ErrorCode.NOT_AUTHENTICATED, "Send Authorization: Bearer <METRICS_TOKEN>.")
            response = JsonResponse(error.as_dict(), status=401)
            response["WWW-Authenticate"] = "Bearer"
            return response
    elif not _loopback(request.META.get("REMOTE_ADDR")):
        error = GatewayError(
            ErrorCode.PERMISSION_DENIED, "/metrics answers loopback clients only; set METRICS_TOKEN to scrape remotely."
        )
        return JsonResponse(error.as_dict(), status=403)
    return ExportToDjangoView(request)
