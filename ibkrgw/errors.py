"""One error type with stable codes, and the one DRF handler that renders it.

Codes are part of the public contract: never rename one. Every door (REST, websockets, MCP,
admin) reports the same code for the same failure.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    NOT_AUTHENTICATED = "not_authenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    THROTTLED = "throttled"
    INTERNAL_ERROR = "internal_error"
    CLIENT_TOO_SLOW = "client_too_slow"
    RESUME_TOO_LATE = "resume_too_late"
    REQUEST_TOO_LARGE = "request_too_large"
    # broker
    BROKER_UNAVAILABLE = "broker_unavailable"
    BROKER_TIMEOUT = "broker_timeout"
    BROKER_ERROR = "broker_error"
    PACING_VIOLATION = "pacing_violation"
    CONTRACT_NOT_FOUND = "contract_not_found"
    CONTRACT_AMBIGUOUS = "contract_ambiguous"
    NO_MARKET_DATA = "no_market_data"
    MARKET_DATA_LINES = "market_data_lines"
    HISTORICAL_LIMIT = "historical_limit"
    # orders: validation gate
    INVALID_ORDER = "invalid_order"
    INVALID_TICK_SIZE = "invalid_tick_size"
    ACCOUNT_NOT_MANAGED = "account_not_managed"
    MARKET_CLOSED = "market_closed"
    # account-mode gate
    ACCOUNT_MODE_MISMATCH = "account_mode_mismatch"
    # risk gate
    RISK_MAX_QUANTITY = "risk_max_quantity"
    RISK_MAX_NOTIONAL = "risk_max_notional"
    RISK_PRICE_COLLAR = "risk_price_collar"
    RISK_RATE_LIMIT = "risk_rate_limit"
    RISK_BUYING_POWER = "risk_buying_power"
    RISK_STALE_MARKET_DATA = "risk_stale_market_data"
    POSSIBLE_DUPLICATE = "possible_duplicate"
    TRADING_HALTED = "trading_halted"
    # arming gate
    LIVE_OVERRIDE_MISSING = "live_override_missing"
    # idempotency and state
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_STATE_CONFLICT = "order_state_conflict"
    ORDER_NOT_MODIFIABLE = "order_not_modifiable"
    SELF_APPROVAL = "self_approval"
    # ledger
    LEDGER_APPEND_ONLY = "ledger_append_only"
    LEDGER_UNREADABLE = "ledger_unreadable"


class GatewayError(Exception):
    """The one error every layer raises for a failure a user can hit."""

    default_status = status.HTTP_400_BAD_REQUEST
    audited = False  # set once an audit entry records this refusal

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        http_status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.http_status = http_status or self.default_status
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": str(self.code), "message": self.message, "details": self.details}}


# The broker is away (not connected, or not answering): the outage's answers, 503 and 504.
BROKER_AWAY_CODES = frozenset({ErrorCode.BROKER_UNAVAILABLE, ErrorCode.BROKER_TIMEOUT})


class BrokerUnavailable(GatewayError):
    default_status = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(
        self,
        message: str = "The broker connection is not available.",
        *,
        code=ErrorCode.BROKER_UNAVAILABLE,
        http_status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if http_status is None and ErrorCode(code) == ErrorCode.BROKER_TIMEOUT:
            http_status = status.HTTP_504_GATEWAY_TIMEOUT
        super().__init__(code, message, http_status=http_status, details=details)


class AppendOnlyViolation(GatewayError):
    """Raised by the ledger guards; a programming error if it ever reaches a user."""

    default_status = status.HTTP_409_CONFLICT

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.LEDGER_APPEND_ONLY, message)


class LedgerUnreadable(GatewayError):
    """A ledger row the answer needs cannot be read as it was sealed: it was changed behind the application's
    back (`audit.readable`). 409, not 5xx: asking again answers the same until the ledger is repaired; the
    request is fine, the row is not. Narrower filters (time window, symbol) read around the row."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        first = rows[0]
        more = f" (and {len(rows) - 1} more row(s), listed in details.rows)" if len(rows) > 1 else ""
        super().__init__(
            ErrorCode.LEDGER_UNREADABLE,
            f"Ledger row {first['table']} pk={first['pk']} cannot be read as it was sealed{more}: it was changed "
            f"behind the application's back ({'; '.join(first['problems'])}). Run manage.py audit_verify.",
            http_status=status.HTTP_409_CONFLICT,
            details={"table": first["table"], "pk": first["pk"], "rows": rows, "verify": "manage.py audit_verify"},
        )


_DRF_CODES: dict[type, ErrorCode] = {
    drf_exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    drf_exceptions.AuthenticationFailed: ErrorCode.NOT_AUTHENTICATED,
    drf_exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    drf_exceptions.NotFound: ErrorCode.NOT_FOUND,
    drf_exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    drf_exceptions.Throttled: ErrorCode.THROTTLED,
    drf_exceptions.ParseError: ErrorCode.INVALID_REQUEST,
    drf_exceptions.UnsupportedMediaType: ErrorCode.INVALID_REQUEST,
    drf_exceptions.NotAcceptable: ErrorCode.INVALID_REQUEST,
    drf_exceptions.ValidationError: ErrorCode.INVALID_REQUEST,
}


def retry_after(exc: GatewayError) -> str | None:
    """The Retry-After header for a refusal that says when to try again (whole seconds, rounded up)."""
    if "retry_after_s" not in exc.details:
        return None
    return str(int(exc.details["retry_after_s"]) + 1)


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return Response(exc.as_dict(), status=exc.http_status, headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Render every error as `{"error": {"code", "message", "details"}}`."""
    if isinstance(exc, GatewayError):
        wait = retry_after(exc)
        return error_response(exc, {"Retry-After": wait} if wait else {})
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(exc.messages)
    if isinstance(exc, drf_exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), ErrorCode.INVALID_REQUEST)
        if isinstance(exc, drf_exceptions.ValidationError):
            details = {"fields": exc.detail} if isinstance(exc.detail, dict) else {"errors": exc.detail}
            message = "The request is not valid."
        else:
            details = {}
            message = str(exc.detail)
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        status_code = exc.status_code
        return Response(
            {"error": {"code": str(code), "message": message, "details": details}}, status=status_code, headers=headers
        )
    logger.exception("unhandled error in %s", context.get("view"))
    return Response(
        {"error": {"code": str(ErrorCode.INTERNAL_ERROR), "message": "Internal error.", "details": {}}},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


# Codes for error statuses that Django (not a view) answers, e.g. an unknown path or a body too large.
STATUS_CODES: dict[int, tuple[ErrorCode, str]] = {
    400: (ErrorCode.INVALID_REQUEST, "The request is not valid."),
    401: (ErrorCode.NOT_AUTHENTICATED, "Authentication is required."),
    403: (ErrorCode.PERMISSION_DENIED, "Permission denied."),
    404: (ErrorCode.NOT_FOUND, "No such endpoint."),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed."),
    413: (ErrorCode.REQUEST_TOO_LARGE, "The request body is too large."),
    429: (ErrorCode.THROTTLED, "Too many requests."),
}


def status_error_body(status_code: int, details: dict[str, Any] | None = None) -> dict[str, Any]:
    code, message = STATUS_CODES.get(
        status_code,
        (ErrorCode.INTERNAL_ERROR, "Internal error.")
        if status_code >= 500
        else (ErrorCode.INVALID_REQUEST, "The request is not valid."),
    )
    return {"error": {"code": str(code), "message": message, "details": details or {}}}
