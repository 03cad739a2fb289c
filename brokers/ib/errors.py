"""IB error codes -> our stable error codes and HTTP statuses; IB's errors on orders, kept as their reasons."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

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


# What ib_async's wrapper.error takes for warnings on an order (it keeps working), with 2100-2199; 110 (a price
# off the tick) is a rejection on a new order.
ORDER_WARNINGS = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})
INVALID_PRICE = 110
ORDER_CANCELLED = 202  # "Order Canceled - reason:...": IB's cancel, or its confirmation of ours
# "OrderId N that needs to be cancelled cannot be cancelled, state: ...": our cancel met an order already done
# (filled, or cancelled by another cancel); its own status says what became of it.
NOT_CANCELLABLE = 10148
OWN_CANCEL_ANSWERS = frozenset({ORDER_CANCELLED, NOT_CANCELLABLE})
ORDER_ERRORS_MAX = 5_000


def is_order_warning(code: int, *, new_order: bool) -> bool:
    if code == INVALID_PRICE and new_order:
        return False
    return code in ORDER_WARNINGS or 2100 <= code < 2200


@dataclass(frozen=True, slots=True)
class OrderError:
    code: int
    text: str
    refused: bool  # it stopped a new order the broker had never reported working


class OrderErrors:
    """IB's latest error on each order of one client, by order id: why the broker stopped the order (rejected
    it, cancelled it, left it inactive), whether the error came before the status or after it.

    The newest `max_orders` of each kind are kept. Warnings are no reason, nor is IB's answer to a cancel we
    sent (202 confirming it, 10148 finding the order already done); an error on an order the broker reports
    working again (a refused modification) explains no later stop. Used on the IB worker's loop only."""

    def __init__(self, max_orders: int = ORDER_ERRORS_MAX) -> None:
        self.max_orders = max_orders
        self._errors: OrderedDict[int, OrderError] = OrderedDict()
        self._own_cancels: OrderedDict[int, None] = OrderedDict()

    def note(self, order_id: int, code: int, text: str, *, new_order: bool) -> bool:
        """Remember IB's error on this order; False when it is no reason to stop it. `new_order`: the broker
        has never reported the order working."""
        if is_order_warning(code, new_order=new_order):
            return False
        if code in OWN_CANCEL_ANSWERS and order_id in self._own_cancels:
            return False
        # IB's own "cancelled" (202) stays a cancel; any other error stopping a new order refused it.
        self._keep(self._errors, order_id, OrderError(code, text, refused=new_order and code != ORDER_CANCELLED))
        return True

    def own_cancel(self, order_id: int) -> None:
        """We are cancelling this order: the stop that follows is ours, and no earlier error explains it."""
        self._errors.pop(order_id, None)
        self._keep(self._own_cancels, order_id, None)

    def working(self, order_id: int) -> None:
        """The broker reports the order working: an error before this stopped nothing."""
        self._errors.pop(order_id, None)

    def of(self, order_id: int) -> OrderError | None:
        return self._errors.get(order_id)

    def clear(self) -> None:
        self._errors.clear()
        self._own_cancels.clear()

    def __len__(self) -> int:
        return len(self._errors)

    def _keep(self, memory: OrderedDict[int, Any], order_id: int, value: Any) -> None:
        memory[order_id] = value
        memory.move_to_end(order_id)
        while len(memory) > self.max_orders:
            memory.popitem(last=False)
