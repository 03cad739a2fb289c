from __future__ import annotations

import asyncio
import time

import pytest
from ib_async import IB, LimitOrder, Stock

from .conftest import wait_until


def test_drop_all_connections(gw, connect, allow_ib_errors):
    a, b = connect(gw, client_id=1), connect(gw, client_id=2)
    dropped = []
    a.disconnectedEvent += lambda: dropped.append("a")
    gw.faults.drop_all_connections()
    deadline = time.monotonic() + 5
    while (a.isConnected() or b.isConnected()) and time.monotonic() < deadline:
        try:
            a.sleep(0.02)
        except ConnectionError:  # ib_async re-raises the socket loss from inside sleep()
            pass
    assert not a.isConnected() and not b.isConnected()
    assert dropped == ["a"]
    c = connect(gw, client_id=1)  # reconnecting works
    assert c.isConnected()


def test_refuse_connections(gw, connect, allow_ib_errors):
    # Long enough that even a loaded machine's first connect falls inside it; the loop below waits it out.
    gw.faults.refuse_connections(2.0)
    ib = IB()
    with pytest.raises(ConnectionRefusedError):
        ib.connect("127.0.0.1", gw.port, clientId=1, timeout=2)
    ib.disconnect()
    for _ in range(200):  # retry until the listener is back
        try:
            ib = connect(gw, client_id=1)
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    assert ib.isConnected()


def test_delay_replies(gw, connect):
    ib = connect(gw)
    gw.faults.delay(49, 3600)  # reqCurrentTime answered an hour late

    async def later_request_answered_first():
        late = asyncio.ensure_future(ib.reqCurrentTimeAsync())
        await ib.reqPositionsAsync()  # sent after it, not delayed
        answered = late.done()
        late.cancel()
        return answered

    # Ordering, not a stopwatch: a request sent later is answered while the delayed one still waits.
    assert ib.run(later_request_answered_first()) is False
    gw.faults.delay(49, 0.05)
    assert ib.reqCurrentTime() is not None  # still answered, just later
    gw.faults.clear()


def test_never_answer(gw, connect):
    ib = connect(gw)
    gw.faults.never_answer(49)
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        ib.run(asyncio.wait_for(ib.reqCurrentTimeAsync(), 0.3))
    gw.faults.clear()
    assert ib.reqCurrentTime() is not None


def test_never_answer_startup_request_fails_connect(gw, allow_ib_errors):
    gw.faults.never_answer(76)
    ib = IB()
    with pytest.raises(ConnectionError, match="account updates"):
        ib.connect("127.0.0.1", gw.port, clientId=1, timeout=0.5, raiseSyncErrors=True)
    ib.disconnect()


def test_send_error_to_one_or_all(gw, connect):
    a, b = connect(gw, client_id=1), connect(gw, client_id=2)
    got = {1: [], 2: []}
    a.errorEvent += lambda req_id, code, msg, contract: got[1].append((req_id, code, msg))
    b.errorEvent += lambda req_id, code, msg, contract: got[2].append((req_id, code, msg))
    gw.send_error(354, "Requested market data is not subscribed.", req_id=42, client_id=2)
    wait_until(b, lambda: got[2])
    assert got[2] == [(42, 354, "Requested market data is not subscribed.")]
    gw.send_error(2103, "Market data farm connection is broken:usfarm")
    wait_until(a, lambda: any(c == 2103 for _, c, _ in got[1]))
    wait_until(b, lambda: any(c == 2103 for _, c, _ in got[2]))
    assert not any(c == 354 for _, c, _ in got[1])


def test_connectivity_notices(gw, connect):
    ib = connect(gw)
    codes = []
    ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
    for code in (1100, 1102, 1101):
        gw.send_connectivity(code)
    wait_until(ib, lambda: codes == [1100, 1102, 1101])
    assert ib.isConnected()


def test_reject_order_rejects_the_next_new_order_with_that_ref_once(gw, connect, allow_ib_errors):
    ib = connect(gw)
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
    gw.faults.reject_order("no-1", "Not today.")
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    other = ib.placeOrder(aapl, LimitOrder("BUY", 1, 100.00, orderRef="other"))
    refused = ib.placeOrder(aapl, LimitOrder("BUY", 1, 100.00, orderRef="no-1"))
    wait_until(ib, lambda: errors and refused.orderStatus.status == "Inactive")
    assert errors == [(refused.order.orderId, 201, "Order rejected - reason:Not today.")]
    again = ib.placeOrder(aapl, LimitOrder("BUY", 1, 100.00, orderRef="no-1"))  # only the next one
    wait_until(ib, lambda: again.orderStatus.status == other.orderStatus.status == "Submitted")
    assert sorted((o.order_ref, o.status) for o in gw.orders()) == [
        ("no-1", "Inactive"),
        ("no-1", "Submitted"),
        ("other", "Submitted"),
    ]
