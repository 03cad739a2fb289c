"""The composition root: the one place where the apps are plugged into the broker layer.

`brokers/` publishes typed broker events and offers the broker port; it imports nothing of the
apps above it. Here, once per process at start-up (`IbkrgwConfig.ready`), each app subscribes the
handlers that write those events into its ledger, and hands the broker layer its periodic chores,
its health sections and the way ticks are published to other processes.
"""

from __future__ import annotations

import logging
from typing import Any

from brokers import events
from brokers.adapter import (
    BrokerCommission,
    BrokerExecution,
    BrokerOrderStatus,
    BrokerOrderWithdrawn,
    BrokerSnapshot,
    Quote,
)

logger = logging.getLogger(__name__)
HALT_SWEEP_EVERY_S = 1.0
# A halt recorded by another process reaches this one's send queue within this (one primary-key read a tick).
HALT_WATCH_EVERY_S = 0.05
APPROVAL_EXPIRY_EVERY_S = 5.0
REFUSALS_FLUSH_EVERY_S = 5.0


def connect() -> None:
    from django.conf import settings

    from audit.watch import ledger_watch_step
    from ibkrgw.console.snapshots import account_snapshot_record
    from marketdata.groups import quote_group_name, quote_message
    from orders import services as orders
    from orders.types import OrderSent

    # Broker events -> the order ledger (plain transactions: the recorder may batch a burst).
    events.subscribe(BrokerOrderStatus, lambda report: orders.order_status_apply(report=report), batchable=True)
    events.subscribe(BrokerExecution, lambda execution: orders.fill_record(execution=execution), batchable=True)
    events.subscribe(BrokerCommission, lambda c: orders.commission_record(commission=c), batchable=True)
    events.subscribe(OrderSent, lambda sent: orders.order_sent_record(sent=sent), batchable=True)
    events.subscribe(BrokerOrderWithdrawn, lambda w: orders.order_withdrawn_record(withdrawn=w), batchable=True)
    events.subscribe(BrokerSnapshot, lambda snapshot: orders.orders_reconcile(snapshot=snapshot))

    # Chores of the process that owns the IB connection.
    events.add_chore("orders.expire_pending", orders.orders_expire_pending, every_s=APPROVAL_EXPIRY_EVERY_S)
    events.add_chore("trading.halt_sweep", orders.trading_halt_sweep, every_s=HALT_SWEEP_EVERY_S)
    events.add_chore("trading.halt_watch", orders.trading_halt_watch, every_s=HALT_WATCH_EVERY_S)
    events.add_chore("console.account_snapshot", account_snapshot_record, every_s=1.0)  # records when due
    events.add_chore("audit.ledger_watch", ledger_watch_step, every_s=settings.LEDGER_WATCH_EVERY_S)
    # Refusals over the audit bound: their count is written once the minute is over, and when the process stops.
    events.add_chore("orders.refusals_flush", orders.refusals_flush, every_s=REFUSALS_FLUSH_EVERY_S)
    events.add_stop_hook("orders.refusals_flush", lambda: orders.refusals_flush(final=True))

    events.add_health_section(_trading_health)
    events.add_health_section(_ledger_health)
    # Health's probe is shared for a second; a halt or resume made in this process shows at once.
    from django.db.models.signals import post_save

    from brokers.selectors import health_probe_changed

    post_save.connect(health_probe_changed, sender="orders.TradingSwitchEvent", dispatch_uid="health-probe")

    def publication(quote: Quote) -> tuple[str, dict[str, Any]]:
        return quote_group_name(quote.con_id), dict(quote_message(quote, stale=False))

    events.set_quote_publication(publication)


_missing_reported: list[frozenset[str]] = [frozenset()]


def _ledger_health() -> dict[str, Any]:
    """Whether the ledger's append-only triggers are all still there (someone with the database can drop one),
    and what this process's watch over the seals has found."""
    from django.db import connection

    from audit.triggers import missing_triggers
    from audit.watch import ledger_watch_state

    try:
        missing = missing_triggers(connection)
    except Exception:  # database down: health says so in its own section
        return {"ledger": None}
    if frozenset(missing) != _missing_reported[0]:
        _missing_reported[0] = frozenset(missing)
        if missing:
            logger.error(
                "ledger triggers missing, disabled or altered: %s (run manage.py audit_verify)", ", ".join(missing)
            )
    watch = ledger_watch_state()
    return {
        "ledger": {
            "guarded": not missing,
            "missing_triggers": missing,
            "watch": None
            if watch is None
            else {
                "intact": not watch.problems,
                "passes": watch.passes,
                "checked_to_seq": watch.checked_to_seq,
                "last_pass_at": watch.last_pass_at,
                "problems": watch.problems,
                "problem_count": watch.problem_count,
            },
        }
    }


def _trading_health() -> dict[str, Any]:
    from orders.selectors import trading_switch_state
    from orders.services import halt_progress

    try:
        switch = trading_switch_state()
        progress = halt_progress()
    except Exception:  # database down: health says so in its own section
        return {"trading_halted": None, "halt": None}
    halt: dict[str, Any] | None = None
    if switch.halted:
        working = progress.working_orders
        halt = {
            "state": "done" if working == 0 else "cancelling",
            "working_orders": working,
            "checked_at": progress.checked_at,
            # A kill switch held because its ledger was tampered with says why first.
            "error": "; ".join(filter(None, [switch.untrusted, progress.error])),
        }
    return {"trading_halted": switch.halted, "halt": halt}
