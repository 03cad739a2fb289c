from django.urls import path

from brokers import api

urlpatterns = [
    path("health/", api.HealthView.as_view(), name="health"),
    path("account/summary/", api.AccountSummaryView.as_view(), name="account-summary"),
    path("account/positions/", api.PositionListView.as_view(), name="account-positions"),
    path("account/pnl/", api.PnLView.as_view(), name="account-pnl"),
]
