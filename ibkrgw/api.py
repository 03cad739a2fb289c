"""The /api/v1/ routes of every app."""

from django.urls import include, path

urlpatterns = [
    path("", include("brokers.urls")),
    path("", include("marketdata.urls")),
    path("", include("orders.urls")),
    path("", include("audit.urls")),
]
