"""Reads about the broker connection and the account."""

from __future__ import annotations

import logging
import threading
import time
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


# Health's probes (database, lease holder, the apps' health sections) run at most once per
# HEALTH_PROBE_S and are shared by every caller; the web server refreshes them in the background
# while they are in use, so a health request itself does no database work.
HEALTH_PROBE_S = 1.0
_probe: tuple[float, dict[str, Any]] | None = None
_probe_lock = threading.Lock()


def _probe_run() -> dict[str, Any]:
    started = time.monotonic()
    db_ok, db_detail = database_ok()
    probe: dict[str, Any] = {"db_ok": db_ok, "db_detail": db_detail, "vendor": connection.vendor, "sections": {}}
    if db_ok and settings.CHANNEL_LAYER_URL:
        from brokers.scaleout.lease import IB_CONNECTION, lease_holder

        probe["lease_holder"] = lease_holder(name=IB_CONNECTION)
    for section in events.health_sections():
        try:
            probe["sections"].update(section())
        except Exception:  # a failing section is reported as unknown, never breaks health
            logger.warning("health section %s failed", getattr(section, "__name__", section), exc_info=True)
    global _probe
    with _probe_lock:
        if _probe is None or _probe[0] <= started:
            _probe = (started, probe)
    return probe


def health_probe_refresh() -> dict[str, Any]:
    """Run the database probes now (from a thread that may use the database)."""
    from django.db import close_old_connections

    close_old_connections()
    return _probe_run()


def health_probe_cached(max_age: float = HEALTH_PROBE_S) -> dict[str, Any] | None:
    """The last probe if it is younger than `max_age` seconds; never touches the database."""
    hit = _probe
    return hit[1] if hit is not None and time.monotonic() - hit[0] < max_age else None


def health_probe_age() -> float | None:
    hit = _probe
    return None if hit is None else time.monotonic() - hit[0]


def health_probe_forget(**_kwargs) -> None:
    global _probe
    _probe = None


def health_probe_changed(**_kwargs) -> None:
    from django.db import transaction

    health_probe_forget()
    transaction.on_commit(health_probe_forget)


def _gateway_state() -> dict[str, Any]:
    rt = runtime.current()
    if rt is None:
        host, port = runtime.gateway_address()
        return {
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
            "market_data_lines": {"streams": 0, "in_use": 0, "waiting": 0, "elsewhere": 0},
            "reconciled": False,
            "owner": "this_process",
        }
    h = rt.worker.health()
    return {
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
        "market_data_lines": {
            "streams": h.stream_lines,
            "in_use": h.stream_lines_in_use,
            "waiting": h.streams_waiting,
            "elsewhere": h.stream_lines_elsewhere,
        },
        "reconciled": h.reconciled,
        # Which process holds the IB connection when several web processes share it (scale-out).
        "owner": "this_process" if rt.owner else "another_process",
    }


def health_get(probe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything an operator or a load balancer needs to know, without calling IB.

    The gateway's state is read live; the database probes are at most HEALTH_PROBE_S old."""
    if probe is None:
        probe = health_probe_cached() or _probe_run()
    gateway = _gateway_state()
    if "lease_holder" in probe:
        gateway["lease_holder"] = probe["lease_holder"]
    healthy = probe["db_ok"] and gateway["connected"] and not _ledger_tampered(probe["sections"].get("ledger"))
    return {
        "status": "ok" if healthy else "degraded",
        "gateway": gateway,
        "simulated_gateway": settings.IB_GATEWAY == "sim",
        "trading_mode": settings.TRADING_MODE,
        "orders_enabled": settings.ORDERS_ENABLED,
        "reconciliation": "done" if gateway["reconciled"] else "pending",
        "database": {"ok": probe["db_ok"], "detail": probe["db_detail"], "vendor": probe["vendor"]},
        **probe["sections"],
    }


def _ledger_tampered(ledger: dict[str, Any] | None) -> bool:
    """A trigger is missing, or this process's watch found a row or seal that does not hold: a monitor that
    reads only `status` must see it too."""
    if ledger is None:  # the database could not be asked: `database.ok` says so
        return False
    watch = ledger.get("watch")
    return not ledger["guarded"] or (watch is not None and not watch["intact"])


# What health tells only a caller with an API key (or a signed-in operator): who trades, where the gateway
# is, and the ledger's problems by name. Load balancers and probes call health without credentials.
_GATEWAY_PRIVATE = (
    "address",
    "server_version",
    "client_id",
    "accounts",
    "last_error",
    "lease_holder",
    "stale_subscriptions",
)


def health_public(health: dict[str, Any]) -> dict[str, Any]:
    """`health` as an unauthenticated caller sees it: every state and flag, no identifying detail."""
    public = {**health, "gateway": {k: v for k, v in health["gateway"].items() if k not in _GATEWAY_PRIVATE}}
    public["database"] = {k: v for k, v in health["database"].items() if k != "detail"}
    if health.get("halt"):  # the halt's progress, not its error text (a broker's words, a ledger finding)
        public["halt"] = {k: v for k, v in health["halt"].items() if k != "error"}
    ledger = health.get("ledger")
    if ledger is not None:
        watch = ledger["watch"]
        public["ledger"] = {
            "guarded": ledger["guarded"],
            "watch": None if watch is None else {k: v for k, v in watch.items() if k != "problems"},
        }
    return public


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
    """The account a read names, else the default one; refused when the gateway does not manage it. So is a
    configured IB_ACCOUNT the gateway's login does not manage (a mistake, or another login since a reconnect):
    its reads would otherwise answer empty, as if the account held nothing."""
    if not account:
        default, managed = account_default(), runtime.adapter().managed_accounts()
        if managed and default not in managed:  # none known yet: the broker call says why
            raise GatewayError(
                ErrorCode.ACCOUNT_NOT_MANAGED,
                f"Account {default} (IB_ACCOUNT) is not managed by the connected gateway.",
                http_status=422,
                details={"account": default, "setting": "IB_ACCOUNT"},
            )
        return default
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
