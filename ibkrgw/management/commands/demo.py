"""`manage.py demo`: a scripted tour on a private simulated gateway: health, contract, quote, bars,
preview, a simulated order, then (orders enabled for this process only) an order that fills, and
its audit trail.

It always starts its own simulated IB Gateway on a free loopback port, whatever IB_GATEWAY says,
so it never touches a real account, and it runs on its own throwaway SQLite database (a child
process with DATABASE_URL pointing at a temporary file, deleted afterwards), so the configured
database, whose ledger can never be cleaned, receives nothing. It goes through the same services
as every door and prints their REST output shapes. Exit 0 when every step worked, non-zero with a message otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.selectors import audit_list
from brokers import runtime
from brokers.adapter import ContractSpec
from brokers.payloads import contracts_payload, health_payload
from brokers.selectors import health_get
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import GatewayError
from marketdata.payloads import bars_payload, quote_payload
from marketdata.services import bars_get, contract_resolve, quote_get
from orders.payloads import order_output, preview_output
from orders.selectors import fill_list, order_get, trading_halted
from orders.services import order_preview, order_submit
from orders.types import OrderRequest

CONNECT_TIMEOUT_S = 20.0
FILL_TIMEOUT_S = 20.0
SYMBOL = "AAPL"
# Set in the child process that runs the tour on the throwaway database.
THROWAWAY_ENV = "IBKRGW_DEMO_THROWAWAY_DB"


class Command(BaseCommand):
    help = "A scripted tour on a private simulated IB Gateway: quote, bars, preview, order, fill, audit trail."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", type=int, default=None, help="IB client id (default: IB_CLIENT_ID).")

    def handle(self, *args, **options):
        if settings.TRADING_MODE != "paper":
            raise CommandError("The demo runs in paper mode only (TRADING_MODE=paper): its market is simulated.")
        if os.environ.get(THROWAWAY_ENV) != "1":
            self._in_throwaway_database(options)
            return
        self._run(options)

    def _in_throwaway_database(self, options) -> None:
        folder = tempfile.mkdtemp(prefix="ibkrgw-demo-")
        try:
            path = os.path.join(folder, "demo.sqlite3")
            self._step(f"Using a throwaway database ({path}); the configured database is not touched")
            env = {
                **os.environ,
                THROWAWAY_ENV: "1",
                "DATABASE_URL": f"sqlite:///{path}",
                "CHANNEL_LAYER_URL": "",  # no announcements to the deployment's other processes
            }
            command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "demo"]
            if options["client_id"] is not None:
                command += ["--client-id", str(options["client_id"])]
            errors = tempfile.TemporaryFile(mode="w+", dir=folder)
            # Our own interpreter and manage.py, arguments from this command's parser only.
            with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as child:  # noqa: S603
                for line in child.stdout:
                    self.stdout.write(line, ending="")
            errors.seek(0)
            self.stderr.write(errors.read(), ending="")
            errors.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if child.returncode != 0:
            raise CommandError("The demo failed (see above).", returncode=child.returncode)

    def _run(self, options) -> None:
        from brokers.sim.server import SimGateway

        if runtime.current() is not None:
            raise CommandError("A broker connection is already running in this process; the demo needs its own.")
        self._migrate()
        if trading_halted():
            raise CommandError("Trading is halted (kill switch). Resume it in the admin first, then run the demo.")

        orders_enabled, ib_account, hours = settings.ORDERS_ENABLED, settings.IB_ACCOUNT, settings.TRADING_HOURS
        # The private simulator manages its own paper account; a configured IB_ACCOUNT belongs to another gateway.
        settings.IB_ACCOUNT = None
        settings.TRADING_HOURS = "always"  # the simulated market never closes
        # A demo runs at any hour: the simulated market never closes.
        sim = SimGateway(host="127.0.0.1", port=0, seed=settings.IB_SIM_SEED, trading_hours="always").start()
        try:
            client_id = settings.IB_CLIENT_ID if options["client_id"] is None else options["client_id"]
            self._step(f"Starting a private simulated IB Gateway on 127.0.0.1:{sim.port} (client id {client_id})")
            runtime.start(host="127.0.0.1", port=sim.port, client_id=client_id)
            if not runtime.current().worker.reconciled.wait(CONNECT_TIMEOUT_S):
                raise CommandError(f"Could not connect to the simulated gateway within {CONNECT_TIMEOUT_S:.0f}s.")
            self._tour(sim)
        except GatewayError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        finally:
            # Whatever happened, leave the process as it was: orders switch, worker, simulator.
            settings.ORDERS_ENABLED, settings.IB_ACCOUNT, settings.TRADING_HOURS = orders_enabled, ib_account, hours
            runtime.stop()
            sim.stop()
        self.stdout.write(self.style.SUCCESS("\nDemo finished: every step worked."))

    # -- the tour ------------------------------------------------------------------------------------
    def _tour(self, sim) -> None:
        spec = ContractSpec(symbol=SYMBOL)

        self._step("1. Health")
        self._show(health_payload(health_get()))

        self._step(f"2. Contract resolution ({SYMBOL})")
        self._show(contracts_payload(contract_resolve(spec=spec)))

        self._step(f"3. Quote ({SYMBOL})")
        contract, quote = quote_get(spec=spec)
        self._show(quote_payload(contract, quote))

        self._step(f"4. Daily bars ({SYMBOL}, last 5 days)")
        params = {"bar_size": "1 day", "duration": "5 D", "what_to_show": "TRADES", "use_rth": True}
        contract, bars = bars_get(spec=spec, **params)
        self._show(bars_payload(contract, bars, params))

        self._step(f"5. Preview: BUY 10 {SYMBOL} MKT (every gate as a dry run, and the what-if; nothing is sent)")
        actor = self._actor()
        self._show(preview_output(order_preview(request=self._request("preview"), actor=actor)))

        self._step("6. An order with ORDERS_ENABLED=false: recorded as simulated, nothing reaches the gateway")
        settings.ORDERS_ENABLED = False
        simulated = order_submit(request=self._request("simulated"), actor=self._actor()).order
        output = order_output(simulated)
        self._show(output)
        if output["status"] != "simulated" or self._sent(sim):
            raise CommandError(f"Expected a simulated order that was not sent; got status {output['status']}.")
        self._note(f"{output['client_order_id']}: {output['status']}; the gateway received no order.")

        self._step("7. Orders enabled for the rest of this demo (ORDERS_ENABLED=True in this process only)")
        settings.ORDERS_ENABLED = True
        # A still market makes the fill price and timing deterministic.
        sim.pause_market()
        actor = self._actor()
        order = order_submit(request=self._request("fill"), actor=actor).order
        status = self._wait_status(order, "filled")
        output = order_output(order)
        self._show(output)
        if status != "filled":
            raise CommandError(f"The order did not fill within {FILL_TIMEOUT_S:.0f}s (status {status}).")
        self._note(
            f"{output['client_order_id']}: filled {output['filled_quantity']} @ {output['average_fill_price']} "
            f"(broker order id {output['broker_order_id']})."
        )

        self._step("8. Audit trail of that order (its correlation id, the order and its fills)")
        self._audit_trail(order, actor)

    # -- helpers ---------------------------------------------------------------------------------
    def _migrate(self) -> None:
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            self._step("Migrating the database")
            call_command("migrate", verbosity=0, interactive=False)

    def _actor(self) -> Actor:
        # One correlation id per step, so each step's audit entries can be found together.
        return Actor(kind=ActorKind.SYSTEM, label="demo", source=Source.CLI, correlation_id=f"demo-{uuid.uuid4().hex}")

    def _request(self, step: str) -> OrderRequest:
        return OrderRequest(
            symbol=SYMBOL,
            action="BUY",
            quantity=Decimal(10),
            order_type="MKT",
            client_order_id=f"demo-{step}-{uuid.uuid4().hex[:8]}",
        )

    @staticmethod
    def _sent(sim) -> list:
        return [o for o in sim.received_orders() if not o.what_if]

    @staticmethod
    def _wait_status(order, wanted: str) -> str:
        deadline = time.monotonic() + FILL_TIMEOUT_S
        status = ""
        while time.monotonic() < deadline:
            status = order_get(order_id=order.pk).current_status
            if status == wanted:
                break
            time.sleep(0.05)
        return status

    def _audit_trail(self, order, actor: Actor) -> None:
        # Its request (correlation id), its state changes (target order) and its executions (target fill).
        found = [
            *audit_list(correlation_id=actor.correlation_id),
            *audit_list(target_type="order", target_id=str(order.pk)),
            *(e for f in fill_list(order_id=order.pk) for e in audit_list(target_type="fill", target_id=f.exec_id)),
        ]
        entries = sorted({entry.seq: entry for entry in found}.values(), key=lambda entry: entry.seq)
        if not entries:
            raise CommandError("The order left no audit entries.")
        for entry in entries:
            target = f"{entry.target_type}:{entry.target_id}" if entry.target_id else entry.target_type
            self.stdout.write(
                f"  #{entry.seq} {entry.created_at:%H:%M:%S.%f} {entry.event:<24} "
                f"{entry.actor_kind}:{entry.actor_label} via {entry.source}  {target}"
            )

    def _step(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n== {title}"))

    def _note(self, text: str) -> None:
        self.stdout.write(self.style.SUCCESS(f"-> {text}"))

    def _show(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str))
