from functools import cache

from django.contrib import admin
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_safe
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from ibkrgw.metrics import metrics_view


@cache
def _favicon_svg() -> bytes:
    found = finders.find("ibkrgw/favicon.svg")
    if not isinstance(found, str):
        raise LookupError("static file ibkrgw/favicon.svg is missing")
    with open(found, "rb") as icon:
        return icon.read()


@require_safe
def favicon_view(request):
    """The icon every browser asks for at /favicon.ico (the API docs and the browsable API name none), so no
    page of this server shows a failed request for it in the browser's console."""
    response = HttpResponse(_favicon_svg(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response


urlpatterns = [
    path("favicon.ico", favicon_view, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("ibkrgw.api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]


def _api_error(request, status: int, details: dict | None = None, message: str = ""):
    from django.http import JsonResponse

    from ibkrgw.errors import status_error_body

    body = status_error_body(status, details)
    if message:
        body["error"]["message"] = message
    return JsonResponse(body, status=status)


def _json_404(request, exception=None):
    """Unknown API paths answer in the API's error shape; other paths get Django's page."""
    from django.urls import is_valid_path
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        # API paths end in "/": only GET and HEAD are redirected there, anything else is told where to go.
        urlconf = getattr(request, "urlconf", None)
        if not request.path_info.endswith("/") and is_valid_path(f"{request.path_info}/", urlconf):
            slashed = f"{request.path}/"
            return _api_error(request, 404, {"path": request.path, "use": slashed}, f"No such endpoint: use {slashed}")
        return _api_error(request, 404, {"path": request.path})
    return page_not_found(request, exception)


def _json_400(request, exception=None):
    """Django's own refusals (e.g. a body over DATA_UPLOAD_MAX_MEMORY_SIZE: 413) in the error shape."""
    from django.core.exceptions import RequestDataTooBig
    from django.views.defaults import bad_request

    if isinstance(exception, RequestDataTooBig):
        return _api_error(request, 413)
    if request.path.startswith("/api/"):
        return _api_error(request, 400)
    return bad_request(request, exception)


def _json_500(request):
    from django.views.defaults import server_error

    if request.path.startswith("/api/"):
        return _api_error(request, 500)
    return server_error(request)


handler400 = _json_400
handler404 = _json_404
handler500 = _json_500
