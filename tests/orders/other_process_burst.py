"""Run as a subprocess by the halt tests: another gateway process (a `manage.py mcp`, say) with an IB
connection of its own, whose orders are sent but still wait in its queue for IB's message budget when
another process halts trading.

usage: python -m tests.orders.other_process_burst <port> <count> <directory>

Places one order, then holds its connection's budget spent (the 45 messages a second are used up and
stay so) and places `count` more: each is answered as handed to the IB connection, and waits in its
queue. Writes `<directory>/queued`, waits for `<directory>/go` (the halt has been answered), gives its
own watch of the kill switch up to 10 s to close this connection's latch, then releases the budget, so
that whatever is still queued goes to the broker. Prints one JSON line: {"latch_closed": ..., "answers":
[...]} with each order's answer ({"status": ...} or {"code": ...}). Its periodic halt sweep is off: only the
watch may stop the queue.
"""

import json
import os
import sys
import time
from pathlib import Path

from tests.orders.other_process import connect, place_limit


def main() -> None:
    port, count, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    worker = connect(port, chores_off=("trading.halt_sweep",))  # the watch stays: it is under test
    from brokers import runtime

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

    answers = [place_limit("burst-warm")]  # the contract and its quote are known from here on: orders need no lookup
    budget(spent=True)
    answers += [place_limit(f"burst-{i}") for i in range(count)]
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
