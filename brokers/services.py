"""Writes about the broker connection: its ups and downs land in the audit log; its market-data lines are
shared with the deployment's other connections."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audit import events
from audit.services import audit_record
from brokers.adapter import BrokerConnectionChanged
from brokers.models import MarketDataLineUse
from ibkrgw.actors import Actor

PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@transaction.atomic
def broker_connection_record(*, change: BrokerConnectionChanged, address: str, client_id: int) -> None:
    audit_record(
        event=events.BROKER_CONNECTED if change.connected else events.BROKER_DISCONNECTED,
        actor=Actor.system(),
        target_type="gateway",
        target_id=address,
        data={"client_id": client_id, "reason": change.reason},
    )


# -- market-data lines across the deployment's IB connections ------------------------------------
LINE_SHARE_EVERY_S = 2.0
LINE_REPORT_FRESH_S = 10.0  # a report older than this is a process that stopped without a word


def market_data_lines_share(worker: Any) -> int:
    """Report this connection's stream lines and learn the others': returns the lines held elsewhere.

    While disconnected this connection holds no line at IB, so its report is withdrawn. A gateway cut off from
    IB's servers ("degraded", 1100) keeps the connection and its subscriptions (1102 resumes them, on 1101 the
    worker asks again): its lines stay reported."""
    now = timezone.now()
    if worker.state in ("connected", "degraded"):
        MarketDataLineUse.objects.update_or_create(
            client_id=worker.client_id,
            defaults={"holder": PROCESS, "lines": worker.lines_in_use, "reported_at": now},
        )
    else:
        market_data_lines_withdraw(worker)
    elsewhere = (
        MarketDataLineUse.objects.exclude(client_id=worker.client_id)
        .filter(reported_at__gte=now - timedelta(seconds=LINE_REPORT_FRESH_S))
        .aggregate(total=Sum("lines"))["total"]
        or 0
    )
    if elsewhere != worker.lines_elsewhere:
        worker.run_soon(lambda ib: worker.lines_elsewhere_on_loop(elsewhere))
    return elsewhere


def market_data_lines_withdraw(worker: Any) -> None:
    """This process stops: its connection's lines are free for the others at once."""
    MarketDataLineUse.objects.filter(client_id=worker.client_id, holder=PROCESS).delete()
