"""ASGI entry point: HTTP through Django, websockets through Channels; starts the IB worker."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")

from ibkrgw.web.handler import get_pooled_asgi_application  # noqa: E402

# Each request's middleware and view run in one pool thread (see ibkrgw.web.handler).
django_asgi_app = get_pooled_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from brokers import runtime  # noqa: E402
from ibkrgw.fastlane import FastLane  # noqa: E402
from ibkrgw.limits import ChunkedBodyLimit  # noqa: E402
from ibkrgw.orderlane import OrderLane  # noqa: E402
from ibkrgw.routing import websocket_urlpatterns  # noqa: E402
from ibkrgw.ws_auth import ApiKeyOrSessionAuthMiddleware, BrowserOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The reads programs poll and the orders they place are answered before Django's middleware when
        # they can be, exactly as Django would answer them.
        "http": ChunkedBodyLimit(OrderLane(FastLane(django_asgi_app), executor=django_asgi_app.executor)),
        "websocket": BrowserOriginValidator(ApiKeyOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

if os.environ.get("IBKRGW_NO_BROKER") != "1":
    runtime.start()

if os.environ.get("IBKRGW_SERVER") == "uvicorn":  # the production server (ibkrgw.serve), set up by now
    import gc

    # What start-up allocated lives as long as the process: out of the collector's sight, its full passes
    # (which stop every thread, orders in flight included) walk only what the process made since.
    gc.freeze()
