"""IB's message budget, spent on orders first.

IB disconnects a client that sends more than 50 messages a second, so ib_async sends at most 45 a
second and queues the rest, first in, first out. One queue for everything means a burst of reads
(a client subscribing and unsubscribing quotes in a loop, a screen asking for a hundred snapshots)
holds every order, cancel and the kill switch's global cancel behind it until it drains: seconds
during which a halt cannot reach the broker and new orders time out.

Here what is sent on an order's behalf (`urgent`: its contract lookup and quote, the order, a
modify or cancel, the global cancel, the kill switch's look at working orders, reconciliation)
overtakes queued reads. Among the urgent messages, and among the others, the order is unchanged,
and so is the budget: only who waits changes. A preview's what-if is a read.

The kill switch goes further. When its latch closes, new orders still waiting for the budget are
taken back (`withdraw_queued_orders`), with any change or cancel of theirs queued behind them: the
broker never receives them. Its global cancel goes out at
once (`immediately`), ahead of everything and over ib_async's 45 a second: one message within the
margin to IB's 50, so the halt is at the broker before anything queued. At most one a second goes
over the budget: another one (a halt repeated at once) is first in line instead.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from ib_async import IB
from ib_async.client import Client
from ib_async.util import getLoop

PLACE_ORDER = "3"  # the message id of placeOrder (a new order, or a modification of one)
CANCEL_ORDER = "4"

# Set by the task sending on an order's behalf; a context variable, so other tasks on the loop are unaffected.
_urgent: ContextVar[bool] = ContextVar("ib_message_urgent", default=False)
_immediate: ContextVar[bool] = ContextVar("ib_message_immediate", default=False)


@contextmanager
def urgent() -> Iterator[None]:
    """Messages this task sends meanwhile go ahead of queued reads."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _reset(_urgent, token)


@contextmanager
def immediately() -> Iterator[None]:
    """Messages this task sends meanwhile go out now, ahead of every queued one and over the budget.
    Only for the kill switch's global cancel: IB disconnects a client over 50 messages a second."""
    token = _immediate.set(True)
    try:
        yield
    finally:
        _reset(_immediate, token)


def _reset(var: ContextVar[bool], token: Token[bool]) -> None:
    try:
        var.reset(token)
    except ValueError:
        # A task dropped unfinished (a request abandoned at shutdown) is closed by the garbage collector from
        # another context: the context its flag was set in is gone with it, so there is nothing to restore.
        pass


class OrdersFirstClient(Client):
    """ib_async's client, with urgent messages queued ahead of every other waiting message."""

    _ahead = 0  # how many messages at the front of the queue are urgent ones

    def reset(self) -> None:
        super().reset()  # empties the queue
        self._ahead = 0

    def _sent_within_interval(self) -> deque[float]:
        times, now = self._timeQ, getLoop().time()
        while times and now - times[0] > self.RequestsInterval:
            times.popleft()
        return times

    def sendMsg(self, msg: str | None) -> None:  # ib_async calls it with None to drain
        queued = self._msgQ
        if msg and _immediate.get():
            if len(self._sent_within_interval()) <= self.MaxRequests or not self.MaxRequests:
                self.conn.sendMsg(self._prefix(msg.encode()))
                self._timeQ.append(getLoop().time())  # it counts against the budget of what follows
                return
            # One went over the budget within the last second already (a halt repeated, a sweep): more
            # could reach IB's 50, which disconnects. This one is first in line instead.
            queued.insert(0, msg)
            self._ahead += 1
            msg = None
        elif msg and _urgent.get():
            queued.insert(self._ahead, msg)  # behind the urgent ones already waiting: they keep their order
            self._ahead += 1
            msg = None  # sent by the drain below as the budget allows, from the front
        waiting = len(queued) + (1 if msg else 0)
        super().sendMsg(msg)  # type: ignore[arg-type]  # None: send what the budget allows
        self._ahead = max(0, self._ahead - (waiting - len(queued)))  # the drain sends from the front


def orders_first(ib: IB) -> IB:
    """Make `ib`'s client send urgent messages ahead of queued reads (same client, same wiring)."""
    ib.client.__class__ = OrdersFirstClient
    return ib


def _order_message(msg: str) -> tuple[str, int | None]:
    """(message id, order id) of a queued placeOrder or cancelOrder; (message id, None) for any other."""
    fields = msg.split("\0", 3)
    if fields[0] == PLACE_ORDER and len(fields) > 1 and fields[1].isdigit():
        return PLACE_ORDER, int(fields[1])
    if fields[0] == CANCEL_ORDER and len(fields) > 2 and fields[2].isdigit():  # after the message's version
        return CANCEL_ORDER, int(fields[2])
    return fields[0], None


def withdraw_queued_orders(ib: IB, unsent: Callable[[int, int], bool]) -> list[int]:
    """Take back the queued messages of the orders `unsent(order id, its placeOrder messages still queued)`
    names: every placeOrder and cancelOrder of theirs is never sent. Returns those order ids. Run on the
    IB thread, which alone sends from the queue."""
    client = ib.client
    if not isinstance(client, OrdersFirstClient):
        return []
    places: Counter[int] = Counter()
    for msg in client._msgQ:
        msg_id, order_id = _order_message(msg)
        if msg_id == PLACE_ORDER and order_id is not None:
            places[order_id] += 1
    withdrawn = [order_id for order_id, queued in places.items() if unsent(order_id, queued)]
    taken = set(withdrawn)
    kept, ahead = [], client._ahead
    for position, msg in enumerate(client._msgQ):
        if _order_message(msg)[1] in taken:
            if position < client._ahead:
                ahead -= 1
        else:
            kept.append(msg)
    client._msgQ.clear()
    client._msgQ.extend(kept)
    client._ahead = ahead
    return withdrawn
