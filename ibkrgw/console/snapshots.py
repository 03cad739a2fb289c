"""The account snapshot chore behind the console's equity chart (see marketdata.models.AccountSnapshot)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from brokers import runtime
from brokers.selectors import account_default
from marketdata.models import AccountSnapshot

logger = logging.getLogger(__name__)


def account_snapshot_record() -> AccountSnapshot | None:
    """A housekeeping chore: never raises (a failure is logged and the next run tries again)."""
    try:
        return _record()
    except Exception:
        logger.exception("account snapshot failed")
        return None


def _record() -> AccountSnapshot | None:
    """Record the account's value when the last snapshot is older than the interval; prune old rows.

    Runs as a chore of the process that owns the IB connection (registered in ibkrgw.wiring); does nothing while the
    broker is not connected and reconciled (a snapshot of a half-known account would mislead).
    """
    if not runtime.orders_allowed():
        return None
    from ibkrgw.console.reads import account_state

    now = timezone.now()
    # Cheap first: nothing is asked of the broker until a snapshot is due.
    latest = AccountSnapshot.objects.filter(account=account_default()).order_by("-taken_at").first()
    if latest is not None and now - latest.taken_at < timedelta(seconds=settings.ACCOUNT_SNAPSHOT_INTERVAL_S):
        return None
    state = account_state(with_summary=False)
    if not state["available"]:
        return None
    account = state["account"]
    snapshot = AccountSnapshot.objects.create(
        account=account,
        taken_at=now,
        net_liquidation=state["net_liquidation"],
        cash=state["figures"]["cash"],
        unrealized_pnl=state["pnl"]["unrealized"],
        realized_pnl=state["pnl"]["realized"],
        daily_pnl=state["pnl"]["daily"],
    )
    AccountSnapshot.objects.filter(taken_at__lt=now - timedelta(days=settings.ACCOUNT_SNAPSHOT_KEEP_DAYS)).delete()
    return snapshot
