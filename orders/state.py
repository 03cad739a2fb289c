"""The order state machine, and how IB's statuses map onto ours."""

from __future__ import annotations

from decimal import Decimal

from orders.models import OrderStatus as S

TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.SIMULATED})
WORKING = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING, S.INACTIVE, S.UNKNOWN, S.PENDING_SUBMIT})
_BROKER_REPORTS = {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.INACTIVE, S.REJECTED}

ALLOWED: dict[str, frozenset[str]] = {
    S.PENDING_APPROVAL: frozenset({S.PENDING_SUBMIT, S.SIMULATED, S.REJECTED, S.EXPIRED, S.CANCELLED}),
    S.PENDING_SUBMIT: frozenset(_BROKER_REPORTS | {S.UNKNOWN}),
    S.UNKNOWN: frozenset(_BROKER_REPORTS),
    S.SUBMITTED: frozenset(_BROKER_REPORTS),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.INACTIVE, S.SUBMITTED}
    ),
    S.CANCEL_PENDING: frozenset({S.CANCELLED, S.FILLED, S.PARTIALLY_FILLED, S.SUBMITTED, S.CANCEL_PENDING, S.INACTIVE}),
    S.INACTIVE: frozenset(
        {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.CANCEL_PENDING, S.INACTIVE, S.REJECTED}
    ),
}
for _terminal in TERMINAL:
    ALLOWED[_terminal] = frozenset()


def can_transition(current: str, new: str) -> bool:
    return new in ALLOWED.get(current, frozenset())


# IB's error "Order rejected - reason:...": the order is dead at the broker (IB shows it Inactive).
IB_ORDER_REJECTED = 201


def from_ib(
    status: str,
    *,
    filled: Decimal,
    remaining: Decimal | None,
    error_code: int | None = None,
    refused: bool = False,
) -> str | None:
    """Our status for an IB order status, or None when it says nothing new (e.g. ApiPending).

    `error_code`: IB's error that stopped the order, if any. An order IB stopped with "Order rejected"
    is `rejected` (final), whichever came first: the error (ib_async then marks it Cancelled) or IB's
    Inactive. So is one that `refused`: stopped by IB's error before the broker ever reported it working
    (203 "not available for this account", 103 "duplicate order id", ...). Inactive without either may
    come back (an order held, say), so it stays `inactive`."""
    if status == "Filled" or (remaining == 0 and filled > 0):
        return S.FILLED
    if (error_code == IB_ORDER_REJECTED or refused) and status in ("Inactive", "Cancelled", "ApiCancelled"):
        return S.REJECTED
    if status in ("Cancelled", "ApiCancelled"):
        return S.CANCELLED
    if status == "PendingCancel":
        return S.CANCEL_PENDING
    if status == "Inactive":
        return S.INACTIVE
    if status in ("PreSubmitted", "Submitted", "PendingSubmit"):
        return S.PARTIALLY_FILLED if filled > 0 else S.SUBMITTED
    return None
