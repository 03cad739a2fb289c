"""`manage.py healthcheck [--json]`: really connect with its own client id, check database and gateway.

Exit 0 only when both are healthy. Used by Docker health checks and monitoring.
"""

from __future__ import annotations

import json
import random
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from brokers.runtime import gateway_address
from brokers.selectors import database_ok


class Command(BaseCommand):
    help = "Check the database and the IB gateway connection; exit 0 only when healthy."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--timeout", type=float, default=None, help="Connect timeout in seconds.")
        parser.add_argument(
            "--client-id",
            type=int,
            default=None,
            help="Client id for the probe connection (default: a random high id).",
        )

    def handle(self, *args, **options):
        report = {"database": {}, "gateway": {}}
        db_ok, db_detail = database_ok()
        report["database"] = {"ok": db_ok, "detail": db_detail}
        host, port = gateway_address()
        # A random high client id so the probe never collides with the running gateway's own ids.
        client_id = options["client_id"] or random.randint(900_000, 999_999)  # noqa: S311
        timeout = options["timeout"] or settings.IB_CONNECT_TIMEOUT
        report["gateway"] = self._probe(host, port, client_id, timeout)
        report["healthy"] = db_ok and report["gateway"]["ok"]
        report["trading_mode"] = settings.TRADING_MODE
        report["orders_enabled"] = settings.ORDERS_ENABLED
        if options["json"]:
            self.stdout.write(json.dumps(report, default=str))
        else:
            gw = report["gateway"]
            self.stdout.write(f"database: {'ok' if db_ok else 'FAIL'} ({db_detail})")
            self.stdout.write(
                f"gateway:  {'ok' if gw['ok'] else 'FAIL'} {gw['address']} {gw.get('detail', '')}".rstrip()
            )
            self.stdout.write(
                f"mode:     {settings.TRADING_MODE}, orders {'enabled' if settings.ORDERS_ENABLED else 'disabled'}"
            )
            self.stdout.write("healthy" if report["healthy"] else "UNHEALTHY")
        if not report["healthy"]:
            raise SystemExit(1)

    def _probe(self, host: str, port: int, client_id: int, timeout: float) -> dict:
        from ib_async import IB

        ib = IB()
        started = time.monotonic()
        result = {"address": f"{host}:{port}", "client_id": client_id, "ok": False}
        try:
            ib.connect(host, port, clientId=client_id, timeout=timeout, readonly=True)
            result.update(
                ok=True,
                server_version=ib.client.serverVersion(),
                accounts=ib.managedAccounts(),
                connect_ms=round((time.monotonic() - started) * 1000, 1),
            )
            result["detail"] = f"server v{result['server_version']}, accounts {','.join(result['accounts'])}"
        except Exception as exc:  # refused, timeout, client id in use: all mean unhealthy
            result["detail"] = f"{type(exc).__name__}: {exc}".strip()
        finally:
            if ib.isConnected():
                ib.disconnect()
        return result
