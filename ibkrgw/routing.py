"""Websocket routes (wrapped by `ibkrgw.asgi` in the Origin check and API-key-or-session auth)."""

from django.urls import path

from marketdata.consumers import QuoteStreamConsumer
from orders.consumers import OrderStreamConsumer

websocket_urlpatterns = [
    path("ws/quotes/", QuoteStreamConsumer.as_asgi()),
    path("ws/orders/", OrderStreamConsumer.as_asgi()),
]
