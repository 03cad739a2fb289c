"""Request middleware: a correlation id for every request, carried in a contextvar."""

import re
import uuid

from ibkrgw.actors import correlation_id_var

HEADER = "X-Correlation-ID"
# Accept a caller's id only when it is short and plain, so it can't inject into logs.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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
