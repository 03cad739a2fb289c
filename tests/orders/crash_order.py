"""Run as a subprocess by the crash tests: place one order and die at a chosen moment.

usage: python -m tests.orders.crash_order <port> <client_order_id> after_intent|after_send
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


if __name__ == "__main__":
    main()
