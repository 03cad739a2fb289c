"""Run as a subprocess by the crash tests: place one order and die at a chosen moment.

usage: python -m tests.orders.crash_order <port> <client_order_id> after_intent|after_send|after_modify_send

after_modify_send: place a resting LMT BUY 5 at 182.00, and once the broker holds it, change its limit
to 183.00 and die as soon as the change has gone out (before it is recorded).
"""

import os
import sys


def main() -> None:
    port, client_order_id, when = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    import django

    django.setup()
    from decimal import Decimal

    from brokers import runtime
    from ibkrgw.actors import Actor, ActorKind, Source
    from orders import services
    from orders.services import trading
    from orders.types import OrderRequest

    runtime.start(host="127.0.0.1", port=int(port), client_id=int(os.environ.get("CRASH_CLIENT_ID", "9")), wait=10)
    rt = runtime.current()
    rt.worker.reconciled.wait(10)
    if when == "after_modify_send":
        _modify_then_die(rt, client_order_id)
    if when == "after_intent":
        trading.order_send_with_exits = lambda *a, **k: os._exit(17)
    else:
        place = rt.adapter.order_place

        def place_then_die(**kwargs):
            place(**kwargs)
            os._exit(17)

        rt.adapter.order_place = place_then_die
    request = OrderRequest(
        symbol="AAPL", action="BUY", quantity=Decimal(5), order_type="MKT", client_order_id=client_order_id
    )
    services.order_submit(request=request, actor=Actor(kind=ActorKind.SYSTEM, label="crash", source=Source.CLI))
    os._exit(3)  # must not get here


def _modify_then_die(rt, client_order_id: str) -> None:
    import time
    from decimal import Decimal

    from ibkrgw.actors import Actor, ActorKind, Source
    from orders import services
    from orders.selectors import order_latest_event
    from orders.types import OrderRequest

    actor = Actor(kind=ActorKind.SYSTEM, label="crash", source=Source.CLI)
    request = OrderRequest(
        symbol="AAPL",
        action="BUY",
        quantity=Decimal(5),
        order_type="LMT",
        limit_price=Decimal("182.00"),
        client_order_id=client_order_id,
    )
    order = services.order_submit(request=request, actor=actor).order
    deadline = time.monotonic() + 10
    while order_latest_event(order).status != "submitted":
        if time.monotonic() > deadline:
            os._exit(4)
        time.sleep(0.02)
    place = rt.adapter.order_place

    def place_then_die(**kwargs):
        place(**kwargs)
        os._exit(17)

    rt.adapter.order_place = place_then_die
    services.order_modify(order_id=order.pk, actor=actor, limit_price=Decimal("183.00"))
    os._exit(3)  # must not get here


if __name__ == "__main__":
    main()
