from django.urls import path
from rest_framework.routers import SimpleRouter

from audit import api

router = SimpleRouter()
router.register("audit", api.AuditEntryViewSet, basename="audit")
urlpatterns = [path("audit/head/", api.LedgerHeadView.as_view(), name="audit-head"), *router.urls]
