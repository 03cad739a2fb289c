"""What the ledger's write path costs: rows per second in-process, and REST orders per second.

    .venv/bin/python bench/bench_ledger.py [--intents 500] [--orders 300] [--threads 4] [--no-rest] [--dir /dev/shm]

1. In-process, on a throwaway SQLite database: N transactions, each writing what an order's life
   writes (order intent + first event + audit entry; then a status event, a fill, a commission, each
   with its audit entry), every one a durable commit. Prints transactions/s and ms per ledger row.
   `--dir /dev/shm` puts that database in memory-backed storage: the CPU cost alone, without fsync.
2. REST POST orders/ through the web server bench/harness.py starts, against the simulated gateway, 1 and N clients.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, order_rate, stack  # noqa: E402


def ledger_rate(n: int, directory: str | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ibkrgw-bench-ledger-", dir=directory))
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ibkrgw.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone

    from audit import events
    from audit.services import audit_record
    from ibkrgw.actors import Actor, ActorKind, Source
    from orders.models import Commission, Fill, Order, OrderEvent

    actor = Actor(kind=ActorKind.API_KEY, label="bench", source=Source.REST, correlation_id="bench")

    def intent(i: int) -> Order:
        with transaction.atomic():
            order = Order.objects.create(
                account="DU1234567",
                client_order_id=f"bench-{i}",
                request_hash=f"{i:064x}",
                symbol="MSFT",
                sec_type="STK",
                exchange="SMART",
                currency="USD",
                con_id=272093,
                action="BUY",
                quantity=Decimal("1"),
                order_type="LMT",
                limit_price=Decimal("410.25"),
                tif="DAY",
                trading_mode="paper",
                actor_kind=actor.kind,
                actor_label=actor.label,
                source=actor.source,
                correlation_id=actor.correlation_id,
            )
            OrderEvent.objects.create(order=order, status="pending_submit", remaining_quantity=Decimal("1"))
            audit_record(event=events.ORDER_SUBMITTED, actor=actor, target_type="order", target_id=str(order.pk))
        return order

    def filled(i: int, order: Order) -> None:
        with transaction.atomic():
            OrderEvent.objects.create(order=order, status="filled", filled_quantity=Decimal("1"), broker_order_id=i)
            audit_record(event=events.ORDER_STATUS_CHANGED, actor=actor, target_type="order", target_id=str(order.pk))
        with transaction.atomic():
            fill = Fill.objects.create(
                exec_id=f"bench.{i}",
                order=order,
                account="DU1234567",
                symbol="MSFT",
                side="BOT",
                quantity=Decimal("1"),
                price=Decimal("410.25"),
                executed_at=timezone.now(),
            )
            audit_record(event=events.FILL_RECORDED, actor=actor, target_type="fill", target_id=str(fill.pk))
        with transaction.atomic():
            Commission.objects.create(fill=fill, exec_id=fill.exec_id, commission=Decimal("1.00"), currency="USD")
            audit_record(event=events.COMMISSION_RECORDED, actor=actor, target_type="fill", target_id=str(fill.pk))

    intent(-1)  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    orders = [intent(i) for i in range(n)]
    intents_s, intents_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    for i, order in enumerate(orders):
        filled(i, order)
    fills_s, fills_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"ledger writes in-process (SQLite in {workdir.parent}, WAL, synchronous=FULL, a commit per transaction):")
    # CPU time of this process as well: wall time on a shared machine moves with everyone else's load.
    print(
        f"  order intents (order + event + audit)    {n / intents_s:8.1f} /s   {intents_s / n * 1000:6.3f} ms each"
        f"  ({intents_cpu / n * 1000:6.3f} ms CPU)"
    )
    print(
        f"  executions (event, fill, commission)     {n / fills_s:8.1f} /s   {fills_s / n * 1000:6.3f} ms each"
        f"  ({fills_cpu / n * 1000:6.3f} ms CPU; 3 transactions)"
    )
    rows = 10 * n
    print(
        f"  per ledger row (audit entries included)             {(intents_s + fills_s) / rows * 1000:6.3f} ms each"
        f"  ({(intents_cpu + fills_cpu) / rows * 1000:6.3f} ms CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--intents", type=int, default=500)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-rest", action="store_true")
    parser.add_argument("--dir", default=None, help="where the in-process database lives (default: the temp dir)")
    args = parser.parse_args()
    if not args.no_rest:
        with stack(orders_enabled=True) as (_sim_port, http_port, key):
            print("REST order throughput (web server, simulated gateway, every gate and audit entry):")
            seq = order_rate([http_port], key, args.orders, 1, tag="seq")
            print(f"  REST POST orders/ (1 client)             {seq:8.1f} orders/s")
            par = order_rate([http_port], key, args.orders, args.threads, tag="par")
            print(f"  REST POST orders/ ({args.threads} clients)            {par:8.1f} orders/s")
    ledger_rate(args.intents, args.dir)


if __name__ == "__main__":
    main()
