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

from tests.orders.other_process import connect, place_limit


def main() -> None:
    port, client_order_id, directory = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    # The send's own read of the kill switch is under test: neither the sweep nor the watch may stop the order.
    connect(port, chores_off=("trading.halt_sweep", "trading.halt_watch"))
    from brokers import runtime
    from orders.services import trading

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
    print(json.dumps(place_limit(client_order_id)), flush=True)
    runtime.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
