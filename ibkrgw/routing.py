"""Websocket routes (wrapped by `ibkrgw.asgi` in the Origin check and API-key-or-session auth)."""

from django.urls import path, re_path

from ibkrgw.web.ws import NoSuchStream
from marketdata.consumers import QuoteStreamConsumer
from orders.consumers import OrderStreamConsumer

STREAMS = ("/ws/quotes/", "/ws/orders/")

websocket_urlpatterns = [
    path("ws/quotes/", QuoteStreamConsumer.as_asgi()),
    path("ws/orders/", OrderStreamConsumer.as_asgi()),
    re_path(r"", NoSuchStream.as_asgi(streams=STREAMS)),  # last: every other path
]
