"""Account endpoints, health, resilience and healthcheck against the simulated gateway over TCP."""

import json
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from ib_async import Option, Stock

from brokers import runtime
from tests.conftest import trade_at_gateway, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_reports_connected_gateway(ib_runtime, read_client):
    response = read_client.get("/api/v1/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["gateway"]["connected"] is True
    assert body["gateway"]["server_version"] == 178
    assert body["gateway"]["accounts"] == ["DU1234567"]
    assert body["gateway"]["address"].startswith("127.0.0.1:")
    assert body["trading_mode"] == "paper"
    assert body["orders_enabled"] is False
    assert body["reconciliation"] == "done"
    assert body["database"]["ok"] is True
    assert body["gateway"]["owner"] == "this_process"
    assert body["gateway"]["market_data_lines"] == {"streams": 90, "in_use": 0, "waiting": 0, "elsewhere": 0}


@pytest.mark.parametrize("path", ["/api/v1/health/", "/api/v1/health/?format=json"])
def test_health_without_credentials_tells_the_state_but_not_who_trades_or_where(ib_runtime, client, path):
    """Load balancers call health without a key: they get every state and flag, and no account id, gateway
    address, client id, error text or ledger problem by name (the fast lane and the full stack alike)."""
    response = client.get(path, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["gateway"]["connected"] is True
    assert body["reconciliation"] == "done"
    assert body["database"] == {"ok": True, "vendor": body["database"]["vendor"]}
    for private in ("accounts", "address", "client_id", "server_version", "last_error", "stale_subscriptions"):
        assert private not in body["gateway"]
    assert "DU1234567" not in response.content.decode()
    assert set(body["ledger"]) == {"guarded", "watch"}


def test_a_tampered_ledger_degrades_health(ib_runtime, client, read_client, settings, monkeypatch):
    """A monitor that reads only `status` sees a missing trigger and what the ledger watch found, with a key or
    without one (which still gets the flags, not the trigger's or the row's name)."""
    from audit import watch as audit_watch
    from audit.triggers import APPEND_ONLY_TABLES
    from brokers.selectors import health_probe_forget
    from tests.audit.test_ledger_seal import drop_trigger, restore_triggers, rewrite_around_triggers, small_ledger
    from tests.audit.test_watch import one_pass

    settings.LEDGER_WATCH_ROWS = 0  # the housekeeping thread leaves the watch to this test
    watch = audit_watch.LedgerWatch(rows=500)
    monkeypatch.setattr(audit_watch, "_watch", [watch])

    def health() -> list[dict]:
        health_probe_forget()  # health's probe is shared for a second: ask again now
        return [c.get("/api/v1/health/", HTTP_ACCEPT="application/json").json() for c in (read_client, client)]

    fill = small_ledger()["fill"]
    one_pass(watch)
    assert [(h["status"], h["ledger"]["guarded"], h["ledger"]["watch"]["intact"]) for h in health()] == [
        ("ok", True, True)
    ] * 2
    drop_trigger("orders_fill", "delete")
    try:
        keyed, public = health()
        assert (keyed["status"], keyed["ledger"]["missing_triggers"]) == (
            "degraded",
            ["orders_fill.orders_fill_no_delete"],
        )
        assert (public["status"], public["ledger"]["guarded"], "missing_triggers" in public["ledger"]) == (
            "degraded",
            False,
            False,
        )
    finally:
        restore_triggers(*APPEND_ONLY_TABLES)
    assert [h["status"] for h in health()] == ["ok", "ok"]

    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")
    one_pass(watch)
    keyed, public = health()
    assert (keyed["status"], keyed["ledger"]["guarded"], keyed["ledger"]["watch"]["intact"]) == (
        "degraded",
        True,
        False,
    )
    assert keyed["ledger"]["watch"]["problems"]
    assert (public["status"], public["ledger"]["watch"]["intact"], "problems" in public["ledger"]["watch"]) == (
        "degraded",
        False,
        False,
    )


def test_health_without_a_broker_says_not_started(client):
    body = client.get("/api/v1/health/").json()
    assert body["gateway"]["state"] == "not_started"
    assert body["gateway"]["connected"] is False
    assert body["status"] == "degraded"


def test_account_summary_returns_simulated_values(ib_runtime, read_client):
    response = read_client.get("/api/v1/account/summary/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["account"] == "DU1234567"
    values = {v["tag"]: v for v in body["values"]}
    assert Decimal(values["NetLiquidation"]["value"]) > 0
    assert values["NetLiquidation"]["currency"] == "USD"
    assert "TotalCashValue" in values


def test_short_position_negative_cash_and_options_are_reported(ib_runtime, read_client, sim_gateway):
    sim_gateway.pause_market()
    trade_at_gateway(sim_gateway.port, Stock("TSLA", "SMART", "USD"), "SELL", 100)  # short
    trade_at_gateway(sim_gateway.port, Stock("SPY", "SMART", "USD"), "BUY", 3000)  # more than the cash
    option = next(i for i in sim_gateway.market.instruments.values() if i.sec_type == "OPT")
    trade_at_gateway(sim_gateway.port, Option(conId=option.con_id, exchange="SMART"), "BUY", 2)

    def three_positions():
        rows = read_client.get("/api/v1/account/positions/").json()
        return rows if len(rows) == 3 else None

    positions = wait_for(three_positions, message="three positions")
    by_symbol = {(p["contract"]["symbol"], p["contract"]["sec_type"]): p for p in positions}
    assert Decimal(by_symbol[("TSLA", "STK")]["quantity"]) == -100
    assert Decimal(by_symbol[("SPY", "STK")]["quantity"]) == 3000
    assert Decimal(by_symbol[(option.symbol, "OPT")]["quantity"]) == 2

    summary = read_client.get("/api/v1/account/summary/").json()
    cash = {v["tag"]: v["value"] for v in summary["values"]}["TotalCashValue"]
    assert Decimal(cash) < 0
    pnl = read_client.get("/api/v1/account/pnl/")
    assert pnl.status_code == 200
    assert pnl.json()["account"] == "DU1234567"


def test_unmanaged_account_is_422(ib_runtime, read_client):
    response = read_client.get("/api/v1/account/summary/", {"account": "U999"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "account_not_managed"


def test_gateway_that_never_answers_gives_504_within_the_timeout(ib_runtime, read_client, sim_gateway, settings):
    ib_runtime.worker.request_timeout = 1
    sim_gateway.faults.never_answer(1)  # reqMktData
    started = time.monotonic()
    response = read_client.get("/api/v1/quotes/NVDA/")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "broker_timeout"
    assert time.monotonic() - started < 5


def test_dropped_gateway_is_reconnected_and_quote_subscription_resumes(ib_runtime, read_client, sim_gateway):
    assert read_client.get("/api/v1/quotes/AAPL/", {"stream": "true"}).json()["source"] == "stream"
    sim_gateway.faults.refuse_connections(1.0)
    sim_gateway.faults.drop_all_connections()
    # While down: fail fast with 503, and health says so.
    wait_for(lambda: ib_runtime.worker.state != "connected", message="disconnect noticed")
    down = read_client.get("/api/v1/account/summary/")
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "broker_unavailable"
    health = read_client.get("/api/v1/health/").json()
    assert health["gateway"]["down_since"] is not None
    assert health["gateway"]["down_reason"] in ("connection_lost", "refused")
    # Back: reconnected, reconciled, and the subscription ticks again.
    wait_for(lambda: ib_runtime.worker.reconciled.is_set(), timeout=20, message="reconnect")
    assert ib_runtime.worker.reconnects >= 1
    before = ib_runtime.worker.cached_quote(265598)
    sim_gateway.set_price("AAPL", Decimal("150.00"))
    wait_for(
        lambda: (
            (q := ib_runtime.worker.cached_quote(265598)) is not None
            and q is not before
            and q.last == Decimal("150.00")
        ),
        message="ticks after reconnect",
    )


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    env = {
        "IB_GATEWAY": f"127.0.0.1:{port}",
        "PATH": "/usr/bin:/bin",
        "IB_CONNECT_TIMEOUT": "3",
        "DJANGO_SETTINGS_MODULE": "ibkrgw.settings",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "healthcheck", "--json"], capture_output=True, text=True, env=env, timeout=60
    )


def test_healthcheck_exits_zero_when_the_gateway_is_up(sim_gateway):
    result = _healthcheck(sim_gateway.port)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["gateway"]["ok"] is True
    assert report["gateway"]["accounts"] == ["DU1234567"]


def test_healthcheck_exits_non_zero_when_the_gateway_is_down(sim_gateway):
    port = sim_gateway.port
    sim_gateway.stop()
    result = _healthcheck(port)
    assert result.returncode != 0
    assert json.loads(result.stdout)["gateway"]["ok"] is False


def test_runtime_refuses_calls_when_not_started(read_client):
    assert runtime.current() is None
    response = read_client.get("/api/v1/account/summary/")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "broker_unavailable"


def test_a_gateway_that_accepts_but_never_logs_in_is_reported_as_login_pending(transactional_db, client, settings):
    import socket

    # Like IB Gateway waiting at its login screen: the port is open, the API never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings.IB_CONNECT_TIMEOUT = 1
    try:
        runtime.start(host="127.0.0.1", port=silent.getsockname()[1], client_id=1)
        wait_for(lambda: runtime.current().worker.down_reason == "login_pending", message="login_pending")
        body = client.get("/api/v1/health/").json()
        assert body["gateway"]["connected"] is False
        assert body["gateway"]["down_reason"] == "login_pending"
    finally:
        runtime.stop()
        silent.close()


def test_nothing_listening_is_reported_as_refused(transactional_db, client):
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    try:
        runtime.start(host="127.0.0.1", port=port, client_id=1)
        wait_for(lambda: runtime.current().worker.down_reason == "refused", message="refused")
        assert client.get("/api/v1/health/").json()["gateway"]["down_reason"] == "refused"
    finally:
        runtime.stop()
