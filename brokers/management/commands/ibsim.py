"""manage.py ibsim: run the simulated IB Gateway until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from brokers.sim import SimGateway


def _pair(text: str) -> tuple[int, float]:
    msg_id, _, seconds = text.partition(":")
    try:
        return int(msg_id), float(seconds)
    except ValueError as exc:
        raise CommandError(f"--delay expects MSGID:SECONDS, got {text!r}") from exc


class Command(BaseCommand):
    help = "Run the simulated IB Gateway (TWS API socket protocol, server versions 157-178)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=4010)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--server-version", type=int, default=178)
        parser.add_argument("--account", default="DU1234567")
        parser.add_argument("--master-client-id", type=int, default=None)
        parser.add_argument("--tick-interval", type=float, default=0.25)
        parser.add_argument(
            "--trading-hours",
            choices=("always", "exchange"),
            default="exchange",
            help="exchange (default, as IB): orders trade only while the exchange calendar says the market is "
            "open, with warning 399 otherwise; always: the market never closes",
        )
        parser.add_argument(
            "--no-ib-limits",
            action="store_true",
            help="turn off IB's limits (message rate 50/s with error 100, historical pacing 162, "
            "market-data lines 101) for load tests",
        )
        parser.add_argument("--max-market-data-lines", type=int, default=100, help="market-data lines before error 101")
        parser.add_argument(
            "--no-margin-checks", action="store_true", help="accept orders the account could not margin"
        )
        parser.add_argument(
            "--partial-fill-threshold",
            type=Decimal,
            default=Decimal("500"),
            help="max quantity per execution; 0 disables partial fills",
        )
        parser.add_argument(
            "--refuse-for", type=float, default=0.0, metavar="S", help="refuse connections for the first S seconds"
        )
        parser.add_argument(
            "--delay",
            action="append",
            default=[],
            metavar="MSGID:SECONDS",
            help="answer requests with this msgId late (repeatable)",
        )
        parser.add_argument(
            "--never-answer",
            action="append",
            type=int,
            default=[],
            metavar="MSGID",
            help="swallow requests with this msgId (repeatable)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        threshold = opts["partial_fill_threshold"]
        try:
            gw = SimGateway(
                host=opts["host"],
                port=opts["port"],
                seed=opts["seed"],
                server_version=opts["server_version"],
                account=opts["account"],
                master_client_id=opts["master_client_id"],
                tick_interval=opts["tick_interval"],
                partial_fill_threshold=threshold if threshold > 0 else None,
                trading_hours=opts["trading_hours"],
                ib_limits=not opts["no_ib_limits"],
                max_market_data_lines=opts["max_market_data_lines"],
                margin_checks=not opts["no_margin_checks"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for spec in opts["delay"]:
            gw.faults.delay(*_pair(spec))
        for msg_id in opts["never_answer"]:
            gw.faults.never_answer(msg_id)

        stop = threading.Event()
        # Signal handlers only set a flag; shutdown happens on the main thread below.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        gw.start()
        if opts["refuse_for"] > 0:
            gw.faults.refuse_connections(opts["refuse_for"])
        self.stdout.write(
            f"ibsim listening on {gw.host}:{gw.port} (server version {gw.server_version}, "
            f"account {gw.account_code}, seed {gw.seed}, trading hours {gw.trading_hours}, "
            f"IB limits {'on' if gw.ib_limits else 'off'})"
        )
        self.stdout.flush()
        while not stop.wait(0.5):
            pass
        self.stdout.write("ibsim stopping")
        gw.stop(timeout=5)
        self.stdout.write("ibsim stopped")
