from django.urls import path
from rest_framework.routers import SimpleRouter

from orders import api

router = SimpleRouter()
router.register("orders", api.OrderViewSet, basename="order")
router.register("fills", api.FillViewSet, basename="fill")

urlpatterns = [
    *router.urls,
    path("trading/halt/", api.TradingHaltView.as_view(), name="trading-halt"),
    path("trading/resume/", api.TradingResumeView.as_view(), name="trading-resume"),
]
