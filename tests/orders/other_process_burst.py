"""Run as a subprocess by the halt tests: another gateway process (a `manage.py mcp`, say) with an IB
connection of its own, whose orders are sent but still wait in its queue for IB's message budget when
another process halts trading.

usage: python -m tests.orders.other_process_burst <port> <count> <directory>

Places one order, then holds its connection's budget spent (the 45 messages a second are used up and
stay so) and places `count` more: each is answered as handed to the IB connection, and waits in its
queue. Writes `<directory>/queued`, waits for `<directory>/go` (the halt has been answered), gives its
own watch of the kill switch up to 10 s to close this connection's latch, then releases the budget, so
that whatever is still queued goes to the broker. Prints one JSON line: {"latch_closed": ..., "answers":
[...]} with each order's answer. Its periodic halt sweep is off: only the watch may stop the queue.
"""

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    port, count, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    import django

    django.setup()
    from decimal import Decimal

    from brokers import events, runtime
    from ibkrgw.actors import Actor, ActorKind, Source
    from ibkrgw.errors import GatewayError
    from orders import services
    from orders.selectors import order_latest_event
    from orders.types import OrderRequest

    events._chores.pop("trading.halt_sweep", None)
    runtime.start(host="127.0.0.1", port=int(port), client_id=int(os.environ.get("OTHER_CLIENT_ID", "9")), wait=10)
    worker = runtime.current().worker
    if not worker.reconciled.wait(10):
        os._exit(4)
    actor = Actor(kind=ActorKind.SYSTEM, label="other process", source=Source.CLI)

    def place(client_order_id: str) -> str:
        request = OrderRequest(
            symbol="AAPL",
            action="BUY",
            quantity=Decimal(1),
            order_type="LMT",
            limit_price=Decimal("181.00"),
            client_order_id=client_order_id,
        )
        try:
            return order_latest_event(services.order_submit(request=request, actor=actor).order).status
        except GatewayError as exc:
            return str(exc.code)

    def budget(spent: bool) -> None:
        async def run(ib) -> None:
            client = ib.client
            if spent:  # every message from now on waits in the queue, as behind a burst
                client.RequestsInterval = 3600.0
                client._timeQ.extend([client._timeQ[-1] if client._timeQ else 0.0] * client.MaxRequests)
            else:
                client.RequestsInterval = 1.0
                client._timeQ.clear()
                client.sendMsg(None)  # send what is still queued, as the budget allows

        worker.call(run, require_connected=False)

    answers = [place("burst-warm")]  # the contract and its quote are known from here on: orders need no lookup
    budget(spent=True)
    answers += [place(f"burst-{i}") for i in range(count)]
    (directory / "queued").touch()
    deadline = time.monotonic() + 60
    while not (directory / "go").exists():
        if time.monotonic() > deadline:
            os._exit(5)
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while not worker.sends_blocked and time.monotonic() < deadline:
        time.sleep(0.01)
    latch_closed = worker.sends_blocked
    budget(spent=False)
    deadline = time.monotonic() + 30
    while worker.ib.client._msgQ and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"latch_closed": latch_closed, "answers": answers}), flush=True)
    runtime.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
