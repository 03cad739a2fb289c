"""API keys (and other secrets) sent in a URL never reach a log: daphne's access log, Django's request
log and our own lines are redacted."""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from ibkrgw.logging import RedactingFormatter, RedactingJsonFormatter, redact
from ibkrgw.models import ScopedAPIKey
from tests.conftest import web_server_env
from tests.ws import client as wsclient
from tests.ws.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_redact_hides_keys_tokens_and_passwords():
    line = (
        "GET /api/v1/health/?symbol=AAPL&api_key=abcd1234.SECRETSECRET&x=1 "
        'Authorization: Api-Key abcd1234.SECRETSECRET Bearer tok-SECRETSECRET {"password": "SECRETSECRET"} '
        "/ws/quotes/?API-KEY=SECRETSECRET&token=SECRETSECRET"
    )
    out = redact(line)
    assert "SECRETSECRET" not in out
    assert "symbol=AAPL" in out and "x=1" in out and "api_key=[REDACTED]" in out


@pytest.mark.django_db(transaction=True)
def test_djangos_request_log_of_a_key_in_the_query_string_holds_no_key(client):
    _, key = ScopedAPIKey.objects.create_key(name="in-url", scope="read")
    assert settings.LOGGING["formatters"]["json"]["()"] == "ibkrgw.logging.RedactingJsonFormatter"
    assert settings.LOGGING["formatters"]["text"]["()"] == "ibkrgw.logging.RedactingFormatter"
    stream = io.StringIO()
    handlers = [logging.StreamHandler(stream), logging.StreamHandler(stream)]
    handlers[0].setFormatter(RedactingJsonFormatter("%(levelname)s %(name)s %(message)s"))
    handlers[1].setFormatter(RedactingFormatter("%(levelname)s %(name)s %(message)s %(request)s"))
    handlers[1].addFilter(lambda record: hasattr(record, "request"))
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    try:
        assert client.get(f"/api/v1/account/summary/?api_key={key}").status_code == 401
        assert client.get(f"/api/v1/no-such-endpoint/?api_key={key}&x=1").status_code == 404
    finally:
        for handler in handlers:
            root.removeHandler(handler)
    text = stream.getvalue()
    assert "Unauthorized: /api/v1/account/summary/" in text  # the request was logged ...
    assert "api_key=[REDACTED]" in text  # ... with its URL ...
    assert key not in text and key.split(".")[1] not in text  # ... and without the key


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_daphne_run_with_keys_in_urls_logs_no_key(tmp_path):
    _, key = ScopedAPIKey.objects.create_key(name="in-url-daphne", scope="read")
    port = free_port()
    env = web_server_env(LOG_LEVEL="INFO", LOG_FORMAT="json")
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "ibkrgw.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            _wait_listening(proc, port)
            for path in (f"/api/v1/account/summary/?api_key={key}", f"/api/v1/health/?symbol=AAPL&api_key={key}"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
            asyncio.run(_websocket(port, key))
        finally:
            proc.terminate()
            proc.wait(10)
    logs = out.read_text(errors="replace") + err.read_text(errors="replace")
    assert "/api/v1/account/summary/?api_key=[REDACTED]" in logs  # the access log has the request
    assert "/api/v1/health/?symbol=AAPL&api_key=[REDACTED]" in logs
    assert "WSCONNECT /ws/quotes/" in logs  # the websocket authenticated by ?api_key= was served
    assert "Unauthorized" in logs  # Django's request log too
    assert key not in logs and key.split(".")[1] not in logs


async def _websocket(port: int, key: str) -> None:
    ws = await wsclient.connect(port, f"/ws/quotes/?api_key={key}")
    await ws.send({"action": "ping"})
    assert (await ws.receive())["type"] == "pong"
    ws.close()


def _wait_listening(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("daphne did not start")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_request_log_line_of_a_refused_request_carries_its_correlation_id(tmp_path):
    """Under the production server, for the full stack and for the order lane alike: the line saying a request
    was refused is the one an operator looks up by the id the client was given."""
    import json

    _, key = ScopedAPIKey.objects.create_key(name="log-cid", scope="trade")
    port = free_port()
    env = web_server_env(LOG_LEVEL="INFO", LOG_FORMAT="json")
    log = tmp_path / "server.log"
    # Refused before the broker is asked (its two keys differ): a 503 (no broker here) is logged once per interval.
    order = json.dumps(
        {"client_order_id": "log-1", "symbol": "AAPL", "action": "BUY", "quantity": "1"} | {"order_type": "MKT"}
    )
    with log.open("wb") as out:
        command = [sys.executable, "-m", "ibkrgw.serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_listening(proc, port)
            answers = {}
            trade = {"Authorization": f"Api-Key {key}", "Accept": "application/json", "Idempotency-Key": "log-2"}
            for cid, method, path, headers, body in (
                ("cid-full-stack", "GET", "/api/v1/account/summary/", {}, None),
                ("cid-order-full", "POST", "/api/v1/orders/", trade, order),  # verifies the key for the lane
                ("cid-order-lane", "POST", "/api/v1/orders/", trade, order),
            ):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                headers = {**headers, "X-Correlation-ID": cid, "Content-Type": "application/json"}
                conn.request(method, path, body=body, headers=headers)
                answers[cid] = conn.getresponse().status
                conn.close()
        finally:
            proc.terminate()
            proc.wait(10)
    assert answers == {"cid-full-stack": 401, "cid-order-full": 400, "cid-order-lane": 400}, answers
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refused = {line.get("correlation_id") for line in lines if line.get("logger") == "django.request"}
    assert any("request" not in line for line in lines if line.get("logger") == "django.request")  # the lane's
    assert {"cid-full-stack", "cid-order-full", "cid-order-lane"} <= refused, log.read_text()[-3000:]


def test_an_unknown_symbol_is_no_error_line_but_other_ib_errors_still_are(caplog):
    """Any client can ask for symbols that do not exist (answered contract_not_found): that must not fill the
    log with ERROR lines, while IB's other errors stay errors."""
    wrapper = logging.getLogger("ib_async.wrapper")
    with caplog.at_level(logging.INFO, logger="ib_async.wrapper"):
        wrapper.error("Error 200, reqId 7: No security definition has been found for the request, contract: X")
        wrapper.error("Error 162, reqId 8: Historical Market Data Service error message:HMDS query returned no data")
    assert [(r.levelname, r.getMessage()[:9]) for r in caplog.records] == [
        ("INFO", "Error 200"),
        ("ERROR", "Error 162"),
    ]
    caplog.clear()
    wrapper.error("Error 200, reqId 9: No security definition has been found for the request")
    assert [r.levelname for r in caplog.records] == []  # at ib_async's default level, left out


@pytest.mark.django_db(transaction=True)
def test_answers_while_the_broker_is_away_are_not_one_error_line_each(read_client, caplog):
    """Every request needing the broker answers 503 while it is away; a busy client must not turn that into
    an ERROR line per request. The lines kept say how many were left out; other errors stay one line each."""
    from ibkrgw.logging import BrokerOutageResponseFilter

    # The logging configuration's filter (once more for each time a test configured logging again).
    outages = [f for f in logging.getLogger("django.request").filters if isinstance(f, BrokerOutageResponseFilter)]
    assert outages

    def interval_over() -> None:
        for outage in outages:
            outage._next_at.clear()

    interval_over()
    with caplog.at_level(logging.WARNING, logger="django.request"):
        for _ in range(40):
            response = read_client.get("/api/v1/account/summary/")
            assert response.status_code == 503 and response.json()["error"]["code"] == "broker_unavailable"
        unavailable = [r for r in caplog.records if getattr(r, "status_code", None) == 503]
        assert 1 <= len(unavailable) < 5, [r.getMessage() for r in unavailable]
        assert unavailable[0].levelname == "ERROR"
        interval_over()
        read_client.get("/api/v1/account/summary/")
        last = [r for r in caplog.records if getattr(r, "status_code", None) == 503][-1]
        assert "more 503 answers since the last such line" in last.getMessage()
        caplog.clear()
        for _ in range(3):
            assert read_client.get("/api/v1/no-such-endpoint/").status_code == 404
        assert len([r for r in caplog.records if getattr(r, "status_code", None) == 404]) == 3
