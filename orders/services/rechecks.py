"""Cancels the broker has not answered are checked with the broker, so none stays `cancel_pending` for ever.

A cancel that reached the connection is recorded `cancel_pending`; the broker's answer (cancelled, or
filled first) moves the order on. Should that answer never come while the connection stays up (a
gateway that lost the request), nothing else would: reconciliation runs after reconnects. So the
process that sent a cancel remembers it, and a chore asks the broker for its orders (a reconciliation
that does not hold new orders back) once the cancel has waited STALE_CANCEL_S, and again after every
further STALE_CANCEL_S while the order stays `cancel_pending`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from brokers import runtime
from orders.models import OrderStatus as S
from orders.selectors import order_latest_event, order_row

logger = logging.getLogger(__name__)
STALE_CANCEL_S = 30.0
MAX_REMEMBERED = 10_000

_lock = threading.Lock()
_awaiting: OrderedDict[Any, float] = OrderedDict()  # order pk -> when its cancel was sent (or last checked)


def cancel_awaiting(order_pk: Any) -> None:
    """A cancel of this order was sent: its answer is awaited."""
    with _lock:
        _awaiting[order_pk] = time.monotonic()
        _awaiting.move_to_end(order_pk)
        while len(_awaiting) > MAX_REMEMBERED:
            _awaiting.popitem(last=False)


def orders_recheck_stale_cancels() -> int:
    """Ask the broker for its orders when a cancel has waited STALE_CANCEL_S unanswered; how many did."""
    now = time.monotonic()
    with _lock:
        due = [pk for pk, since in _awaiting.items() if now - since >= STALE_CANCEL_S]
    if not due:
        return 0
    unanswered = []
    for pk in due:
        order = order_row(pk)
        latest = order_latest_event(order) if order is not None else None
        if latest is not None and latest.status == S.CANCEL_PENDING:
            unanswered.append(pk)
    with _lock:
        for pk in due:
            if pk in unanswered:
                _awaiting[pk] = now  # ask again only after another period
            else:
                _awaiting.pop(pk, None)
    if unanswered:
        logger.warning(
            "%d cancel(s) unanswered by the broker for %gs; asking it for its orders", len(unanswered), STALE_CANCEL_S
        )
        runtime.adapter().orders_recheck()
    return len(unanswered)
