"""The /api/v1/ routes of every app, and an index of them for people browsing the API."""

from django.urls import include, path, reverse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView


class ApiRootView(APIView):
    """Where everything is. Endpoints need an API key (`Authorization: Api-Key <key>`) or a signed-in user."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request):
        def url(name: str, *args) -> str:
            return request.build_absolute_uri(reverse(name, args=args))

        return Response(
            {
                "health": url("health"),
                "contracts": url("contracts") + "?symbol=AAPL",
                "quote": url("quote", "AAPL"),
                "bars": url("bars", "AAPL") + "?bar_size=1%20hour&duration=2%20D",
                "account_summary": url("account-summary"),
                "positions": url("account-positions"),
                "pnl": url("account-pnl"),
                "orders": url("order-list"),
                "order_preview": url("order-preview"),
                "fills": url("fill-list"),
                "audit": url("audit-list"),
                "trading_halt": url("trading-halt"),
                "trading_resume": url("trading-resume"),
                "openapi_schema": url("schema"),
                "docs": url("docs"),
                "websockets": ["/ws/quotes/", "/ws/orders/"],
            }
        )


urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("", include("brokers.urls")),
    path("", include("marketdata.urls")),
    path("", include("orders.urls")),
    path("", include("audit.urls")),
]
