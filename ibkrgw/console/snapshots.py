"""The account snapshot chore behind the console's equity chart (see marketdata.models.AccountSnapshot)."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from audit.readable import UNREADABLE_ERRORS
from brokers import runtime
from brokers.selectors import account_default
from ibkrgw.errors import BrokerUnavailable
from marketdata.models import AccountSnapshot
from orders.models import Commission

logger = logging.getLogger(__name__)


def account_snapshot_record() -> AccountSnapshot | None:
    """A housekeeping chore: never raises (a failure is logged and the next run tries again)."""
    try:
        return _record()
    except Exception:
        logger.exception("account snapshot failed")
        return None


def _record() -> AccountSnapshot | None:
    """Record the account's value and P&L when the last snapshot is older than the interval; prune old rows.

    Runs as a chore of the process that owns the IB connection (registered in ibkrgw.wiring); does
    nothing while the broker is not connected and reconciled (a snapshot of a half-known account
    would mislead). It asks the broker for nothing: net liquidation and cash are the account values
    the connection streams since it connected (the broker's own figures, as of its last push),
    positions come from the connection's portfolio stream, marks from streaming quotes (else the
    portfolio's own mark), realised P&L from the ledger's commissions of the day. A chore that opened
    subscriptions by itself would load the broker, and an account-summary subscription slows a clean
    hand-over of the connection; so the broker's daily P&L (a subscription) stays empty here.
    """
    if not runtime.orders_allowed():
        return None
    from ibkrgw.console.reads import positions_marked_streamed

    now = timezone.now()
    account = account_default()
    # Cheap first: nothing else is read until a snapshot is due. Only the last one's time (the last written: they
    # are written in time order), so that a row rewritten behind the application's back (a number no decimal
    # column can hold, a time that is no time) cannot stop the series there: one that cannot be read is due.
    try:
        latest = AccountSnapshot.objects.filter(account=account).order_by("-id").values_list("taken_at", flat=True)[:1]
        last_at = next(iter(latest), None)
    except UNREADABLE_ERRORS:
        last_at = None
    if last_at is not None and now - last_at < timedelta(seconds=settings.ACCOUNT_SNAPSHOT_INTERVAL_S):
        return None
    try:
        streamed = runtime.adapter().account_risk(account=account)
    except BrokerUnavailable:
        return None  # lost since the check above: the next run tries again
    rows = [row for row in positions_marked_streamed() if row.account == account]
    unrealized = None
    if all(row.unrealized_pnl is not None for row in rows):
        unrealized = sum((row.unrealized_pnl for row in rows), Decimal(0))
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    realized = Commission.objects.filter(fill__account=account, created_at__gte=day_start).aggregate(
        total=Sum("realized_pnl")
    )["total"] or Decimal(0)
    snapshot = AccountSnapshot.objects.create(
        account=account,
        taken_at=now,
        net_liquidation=streamed.net_liquidation,
        cash=streamed.cash,
        unrealized_pnl=unrealized,
        realized_pnl=realized,
        daily_pnl=None,  # the broker's daily P&L is a subscription; not opened from here
    )
    AccountSnapshot.objects.filter(taken_at__lt=now - timedelta(days=settings.ACCOUNT_SNAPSHOT_KEEP_DAYS)).delete()
    return snapshot
