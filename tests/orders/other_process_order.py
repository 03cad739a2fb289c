"""Run as a subprocess by the halt tests: another gateway process (a `manage.py mcp`, say) with an IB
connection of its own, whose order is admitted and then held just before its send until told to go on.

usage: python -m tests.orders.other_process_order <port> <client_order_id> <directory>

Writes `<directory>/admitted` once the order is in the ledger, waits for `<directory>/go`, lets the send
proceed, and prints the outcome as one JSON line: {"status": ...} or {"code": ...}. Its own halt sweep and
watch of the kill switch are off: it plays a process neither has come round in since another process halted
trading.
"""

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    port, client_order_id, directory = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    import django

    django.setup()
    from decimal import Decimal

    from brokers import events, runtime
    from ibkrgw.actors import Actor, ActorKind, Source
    from ibkrgw.errors import GatewayError
    from orders import services
    from orders.selectors import order_latest_event
    from orders.services import trading
    from orders.types import OrderRequest

    events._chores.pop("trading.halt_sweep", None)
    events._chores.pop("trading.halt_watch", None)  # the send's own read of the kill switch is under test
    runtime.start(host="127.0.0.1", port=int(port), client_id=int(os.environ.get("OTHER_CLIENT_ID", "9")), wait=10)
    if not runtime.current().worker.reconciled.wait(10):
        os._exit(4)
    send = trading.order_send_with_exits

    def held_send(*args, **kwargs):
        (directory / "admitted").touch()
        deadline = time.monotonic() + 30
        while not (directory / "go").exists():
            if time.monotonic() > deadline:
                os._exit(5)
            time.sleep(0.01)
        return send(*args, **kwargs)

    trading.order_send_with_exits = held_send
    request = OrderRequest(
        symbol="AAPL",
        action="BUY",
        quantity=Decimal(1),
        order_type="LMT",
        limit_price=Decimal("181.00"),
        client_order_id=client_order_id,
    )
    actor = Actor(kind=ActorKind.SYSTEM, label="other process", source=Source.CLI)
    try:
        order = services.order_submit(request=request, actor=actor).order
        result = {"status": order_latest_event(order).status}
    except GatewayError as exc:
        result = {"code": str(exc.code)}
    print(json.dumps(result), flush=True)
    runtime.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
