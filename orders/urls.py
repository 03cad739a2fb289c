from django.urls import path
from rest_framework.routers import SimpleRouter

from ibkrgw.offload import concurrent_view
from orders import api

router = SimpleRouter()
router.register("orders", api.OrderViewSet, basename="order")
router.register("fills", api.FillViewSet, basename="fill")


def _concurrent(pattern):
    # Order writes wait on the pipeline: never on Django's single thread for sync views.
    pattern.callback = concurrent_view(pattern.callback)
    return pattern


urlpatterns = [
    *(_concurrent(p) if p.name and p.name.startswith("order-") else p for p in router.urls),
    path("trading/halt/", concurrent_view(api.TradingHaltView.as_view()), name="trading-halt"),
    path("trading/resume/", api.TradingResumeView.as_view(), name="trading-resume"),
]
