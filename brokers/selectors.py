"""Reads about the broker connection and the account."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import connection

from brokers import events, runtime
from brokers.adapter import AccountSummary, PnLInfo, PositionInfo
from ibkrgw.errors import ErrorCode, GatewayError

logger = logging.getLogger(__name__)


def database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True, "ok"
    except Exception as exc:  # any database failure is reported, not raised
        return False, str(exc)


def health_get() -> dict[str, Any]:
    """Everything an operator or a load balancer needs to know, without calling IB."""
    db_ok, db_detail = database_ok()
    rt = runtime.current()
    if rt is None:
        host, port = runtime.gateway_address()
        gateway: dict[str, Any] = {
            "state": "not_started",
            "address": f"{host}:{port}",
            "connected": False,
            "server_version": None,
            "client_id": None,
            "accounts": [],
            "connected_since": None,
            "down_since": None,
            "last_error": "",
            "reconnects": 0,
            "down_reason": "not_started",
            "stale_subscriptions": [],
            "reconciled": False,
        }
    else:
        h = rt.worker.health()
        gateway = {
            "state": h.state,
            "address": h.gateway,
            "connected": h.state == "connected",
            "server_version": h.server_version,
            "client_id": h.client_id,
            "accounts": list(h.accounts),
            "connected_since": h.connected_since,
            "down_since": h.down_since,
            "last_error": h.last_error,
            "reconnects": h.reconnects,
            "down_reason": h.down_reason,
            "stale_subscriptions": list(h.stale_subscriptions),
            "reconciled": h.reconciled,
        }
    # Which process holds the IB connection when several web processes share it (scale-out).
    gateway["owner"] = "this_process" if rt is None or rt.owner else "another_process"
    if db_ok and settings.CHANNEL_LAYER_URL:
        from brokers.scaleout.lease import IB_CONNECTION, lease_holder

        gateway["lease_holder"] = lease_holder(name=IB_CONNECTION)
    healthy = db_ok and gateway["connected"]
    report = {
        "status": "ok" if healthy else "degraded",
        "gateway": gateway,
        "simulated_gateway": settings.IB_GATEWAY == "sim",
        "trading_mode": settings.TRADING_MODE,
        "orders_enabled": settings.ORDERS_ENABLED,
        "reconciliation": "done" if gateway["reconciled"] else "pending",
        "database": {"ok": db_ok, "detail": db_detail, "vendor": connection.vendor},
    }
    for section in events.health_sections():
        try:
            report.update(section())
        except Exception:  # a failing section is reported as unknown, never breaks health
            logger.warning("health section %s failed", getattr(section, "__name__", section), exc_info=True)
    return report


def account_default() -> str:
    """The account orders and account reads go to: IB_ACCOUNT, else the first managed account."""
    if settings.IB_ACCOUNT:
        return settings.IB_ACCOUNT
    accounts = runtime.adapter().managed_accounts()
    if not accounts:
        from ibkrgw.errors import BrokerUnavailable

        raise BrokerUnavailable("The gateway has not reported any managed account yet.")
    return accounts[0]


def account_resolve(account: str | None) -> str:
    if not account:
        return account_default()
    if account not in runtime.adapter().managed_accounts():
        raise GatewayError(
            ErrorCode.ACCOUNT_NOT_MANAGED,
            f"Account {account} is not managed by this gateway.",
            http_status=422,
            details={"account": account},
        )
    return account


def account_summary_get(*, account: str | None = None) -> AccountSummary:
    return runtime.adapter().account_summary(account=account_resolve(account))


def position_list(*, account: str | None = None) -> list[PositionInfo]:
    return runtime.adapter().positions(account=account_resolve(account))


def pnl_get(*, account: str | None = None) -> PnLInfo:
    return runtime.adapter().pnl(account=account_resolve(account))
