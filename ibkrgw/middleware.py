"""Request middleware: a correlation id for every request, request limits, the API's error shape
for errors that Django answers itself, and messages built only when used."""

import re
import uuid
from urllib.parse import unquote_to_bytes

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import JsonResponse
from django.middleware.common import CommonMiddleware
from django.utils.functional import SimpleLazyObject, empty
from rest_framework.response import Response

from ibkrgw import limits
from ibkrgw.actors import correlation_id_var
from ibkrgw.errors import GatewayError, status_error_body

HEADER = "X-Correlation-ID"
# Accept a caller's id only when it is short and plain, so it can't inject into logs.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
API_PREFIX = "/api/"
# Headers of Django's own error responses that stay meaningful once the body is reshaped.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After", HEADER)


class CorrelationIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        supplied = request.headers.get(HEADER, "")
        cid = supplied if _SAFE_ID.match(supplied) else uuid.uuid4().hex
        request.correlation_id = cid
        token = correlation_id_var.set(cid)
        try:
            response = self.get_response(request)
        finally:
            correlation_id_var.reset(token)
        response[HEADER] = cid
        return response


def gateway_error_response(exc: GatewayError) -> JsonResponse:
    return JsonResponse(exc.as_dict(), status=exc.http_status)


class RequestLimitsMiddleware:
    """Refuse before any view runs: a body over REQUEST_MAX_BODY_BYTES (413, by its Content-Length),
    and on the API a path or query parameter holding a control character or a lone surrogate (400)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        error = self._refusal(request)
        if error is not None:
            return gateway_error_response(error)
        return self.get_response(request)

    def _refusal(self, request) -> GatewayError | None:
        raw_length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            return limits.invalid("Content-Length is not a number.", reason="bad_content_length")
        if length < 0:
            return limits.invalid("Content-Length is not a number.", reason="bad_content_length")
        if length > limits.max_body_bytes():
            return limits.too_large(length, limits.max_body_bytes())
        if not request.path.startswith(API_PREFIX):
            return None
        reason = limits.bad_text_reason(request.path)
        if reason:
            return limits.invalid(f"The path contains a {reason}.", reason="bad_string")
        query = request.META.get("QUERY_STRING", "")
        if "%" in query:
            try:  # Django reads %FF as U+FFFD: a filter on what the client never sent
                unquote_to_bytes(query).decode("utf-8")
            except UnicodeDecodeError:
                return limits.invalid("The query string is not valid UTF-8.", reason="not_utf8")
        for key, values in request.GET.lists():
            try:
                limits.check_json({key: values}, max_depth=3)
            except GatewayError as exc:
                exc.details["parameter"] = key[:40]
                return exc
        return None


class ApiCommonMiddleware(CommonMiddleware):
    """Django's CommonMiddleware, except that an API request other than GET or HEAD to a path missing its
    trailing slash is not redirected: a client that does not follow the 301 would take its order or halt
    for done, and one that does would send it again as a GET. It gets 404 naming the path to use."""

    def should_redirect_with_slash(self, request) -> bool:
        if request.path_info.startswith(API_PREFIX) and request.method not in ("GET", "HEAD"):
            return False
        return super().should_redirect_with_slash(request)


class ApiErrorShapeMiddleware:
    """Under /api/, an error that Django answered itself (an unknown path, a wrong method, a body too
    large, a server error) gets the `{"error": {"code", "message", "details"}}` shape too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith(API_PREFIX)
            or getattr(response, "streaming", False)
            or response.get("Content-Type", "").startswith("application/json")
            # DRF rendered it from the error shape already (as HTML in the browsable API): keep its details.
            or isinstance(response, Response)
        ):
            return response
        shaped = JsonResponse(status_error_body(response.status_code), status=response.status_code)
        for name in _KEPT_HEADERS:
            if name in response:
                shaped[name] = response[name]
        return shaped


class LazyMessageMiddleware(MessageMiddleware):
    """Django's messages (the console's notices), with the storage built when a view first uses it.

    Django builds the cookie and session message stores for every request; an API call never shows
    a message, and building them cost more than a middleware should. A store nobody touched has
    nothing to save, so it is left out of the response as Django would leave it unchanged."""

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        messages = getattr(request, "_messages", None)
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:
            return response
        return super().process_response(request, response)
