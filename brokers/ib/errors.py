"""IB error codes -> our stable error codes and HTTP statuses."""

from __future__ import annotations

from ib_async.wrapper import RequestError

from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError

NO_SECURITY_DEFINITION = 200
PACING_CODES = {420}  # 162 carries pacing violations in its text
NO_MARKET_DATA_PERMISSION = {354, 10089, 10090, 10091, 10168, 10186, 10197}
CONNECTIVITY = {502, 504, 1100, 2110}
HISTORICAL_PACING_RETRY_S = 15


def is_no_market_data_permission(exc: RequestError) -> bool:
    return exc.code in NO_MARKET_DATA_PERMISSION


def translate_request_error(exc: RequestError) -> GatewayError:
    code, message = exc.code, exc.message
    details = {"ib_code": code, "ib_message": message}
    if code == NO_SECURITY_DEFINITION:
        return GatewayError(
            ErrorCode.CONTRACT_NOT_FOUND, "No contract matches the request.", http_status=404, details=details
        )
    if code in PACING_CODES or (code == 162 and "pacing" in message.lower()):
        return GatewayError(
            ErrorCode.PACING_VIOLATION,
            "IB pacing limit reached; retry later.",
            http_status=429,
            details={**details, "retry_after_s": HISTORICAL_PACING_RETRY_S},
        )
    if code in NO_MARKET_DATA_PERMISSION:
        return GatewayError(
            ErrorCode.NO_MARKET_DATA, "No market data permission for this contract.", http_status=403, details=details
        )
    if code in CONNECTIVITY:
        return BrokerUnavailable(f"IB reports a connectivity problem: {message}", details=details)
    return GatewayError(ErrorCode.BROKER_ERROR, f"IB rejected the request: {message}", http_status=502, details=details)
