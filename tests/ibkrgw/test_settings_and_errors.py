"""Settings validation, system checks, the error shape, authentication and correlation ids."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from audit.models import AuditEntry


def _start_with(**env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "ibkrgw.settings"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, env=full_env, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("TRADING_MODE", "livee", "paper, live"),
        ("ORDERS_ENABLED", "maybe", "true, false"),
        ("IB_GATEWAY", "localhost", "HOST:PORT"),
        ("MARKET_DATA_TYPE", "7", "out of range"),
        ("RISK_MAX_ORDER_NOTIONAL", "lots", "decimal"),
        ("CHANNEL_LAYER_URL", "http://x", "redis://"),
        ("LEDGER_SEAL_KEY", "too-short", "at least 32 characters"),
    ],
)
def test_bad_setting_stops_start_up_naming_the_variable(name, value, allowed):
    result = _start_with(**{name: value})
    assert result.returncode != 0
    assert name in result.stderr
    assert allowed in result.stderr


def test_live_with_orders_enabled_and_no_override_file_fails_the_system_check(settings):
    settings.TRADING_MODE = "live"
    settings.ORDERS_ENABLED = True
    settings.LIVE_TRADING_OVERRIDE_FILE = None
    settings.IB_GATEWAY = "127.0.0.1:4001"
    with pytest.raises(SystemCheckError, match="brokers.E001"):
        call_command("check")


def test_live_mode_on_the_simulator_fails_the_system_check(settings):
    settings.TRADING_MODE = "live"
    with pytest.raises(SystemCheckError, match="brokers.E002"):
        call_command("check")


def test_default_settings_are_safe(settings):
    assert settings.TRADING_MODE == "paper"
    assert settings.ORDERS_ENABLED is False
    assert settings.IB_GATEWAY == "sim"
    call_command("check")


@pytest.mark.django_db
def test_unauthenticated_api_call_is_401_with_the_error_shape(client):
    response = client.get("/api/v1/account/summary/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.django_db
def test_wrong_api_key_is_401(client):
    response = client.get("/api/v1/orders/", HTTP_AUTHORIZATION="Api-Key nope.nope")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1, 2, 3]",
        '{"symbol": "AAPL", "action": "BUY", "quantity": "ten", "order_type": "MKT"}',
        '{"symbol": "AAPL", "action": "HOLD", "quantity": "1", "order_type": "MKT"}',
        '{"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT", "qty": "1"}',
        '{"symbol": "AAPL", "action": "BUY", "quantity": "-1", "order_type": "MKT"}',
        '{"symbol": ["AAPL"], "action": "BUY", "quantity": "1", "order_type": "MKT"}',
        '{"symbol": "AAPL", "action": "BUY", "quantity": "1e400", "order_type": "MKT"}',
        '{"symbol": "AAPL", "action": "BUY", "quantity": "NaN", "order_type": "MKT"}',
    ],
)
def test_malformed_order_requests_get_400_invalid_request(api_client, body):
    response = api_client.post("/api/v1/orders/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/trading/halt", {"reason": "no slash"}),
        ("post", "/api/v1/orders", {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"}),
        ("patch", "/api/v1/orders/00000000-0000-0000-0000-000000000000", {"quantity": "2"}),
    ],
)
def test_a_write_to_a_path_without_its_slash_is_refused_naming_the_path_not_redirected(api_client, method, path, body):
    """A 301 would be taken for done by a client that does not follow it, and replayed as a GET by one that does."""
    response = getattr(api_client, method)(path, body, format="json")
    assert response.status_code == 404, response.content
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert error["details"]["use"] == f"{path}/"
    assert path + "/" in error["message"]
    assert api_client.get("/api/v1/health/").json()["trading_halted"] is False
    assert AuditEntry.objects.filter(event="trading.halted").count() == 0


@pytest.mark.django_db
def test_a_read_without_its_slash_is_still_redirected_and_an_unknown_path_names_no_other(api_client):
    assert api_client.get("/api/v1/health")["Location"] == "/api/v1/health/"
    response = api_client.post("/api/v1/no-such-thing", {}, format="json")
    assert response.status_code == 404
    assert "use" not in response.json()["error"]["details"]


@pytest.mark.django_db
def test_unknown_order_id_is_404(api_client):
    assert api_client.get("/api/v1/orders/not-a-uuid/").status_code == 404
    response = api_client.get("/api/v1/orders/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "order_not_found"


@pytest.mark.django_db(transaction=True)
def test_correlation_id_is_echoed_and_reaches_the_audit_entries(ib_runtime, api_client):
    response = api_client.post(
        "/api/v1/orders/",
        {"client_order_id": "cid-1", "symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT"},
        format="json",
        HTTP_X_CORRELATION_ID="trace-abc-123",
    )
    assert response.status_code == 201, response.content
    assert response["X-Correlation-ID"] == "trace-abc-123"
    entry = AuditEntry.objects.get(event="order.simulated")
    assert entry.correlation_id == "trace-abc-123"
    assert entry.actor_kind == "api_key"
    assert entry.source == "rest"
    # The same id finds it through the API.
    found = api_client.get("/api/v1/audit/", {"correlation_id": "trace-abc-123"}).json()
    assert [e["event"] for e in found["results"]] == ["order.simulated"]


@pytest.mark.django_db
def test_correlation_id_is_generated_when_absent_or_unsafe(client):
    generated = client.get("/api/v1/health/")["X-Correlation-ID"]
    assert len(generated) == 32
    unsafe = client.get("/api/v1/health/", HTTP_X_CORRELATION_ID="bad id\nwith newline")["X-Correlation-ID"]
    assert "\n" not in unsafe and unsafe != "bad id\nwith newline"


@pytest.mark.django_db
def test_openapi_schema_is_served(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/orders/" in response.content
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_reads_are_throttled_per_key_with_retry_after(read_client, settings):
    settings.API_READ_RATE = "3/min"
    statuses = [read_client.get("/api/v1/orders/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = read_client.get("/api/v1/orders/")
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


@pytest.mark.django_db
def test_the_api_root_lists_the_endpoints(client):
    response = client.get("/api/v1/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    links = response.json()
    assert links["orders"].endswith("/api/v1/orders/")
    assert client.get(links["health"].replace("http://testserver", "")).status_code == 200
