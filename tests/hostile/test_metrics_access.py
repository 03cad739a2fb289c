"""/metrics answers loopback clients only by default, or only bearers of METRICS_TOKEN when it is set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.hostile.conftest import assert_shaped

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_can_scrape(client, address):
    response = client.get("/metrics", REMOTE_ADDR=address)
    assert response.status_code == 200
    assert b"ibkrgw_orders" in response.content


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.1", "", "garbage"])
def test_other_clients_are_refused_without_any_metric(client, address):
    response = client.get("/metrics", REMOTE_ADDR=address)
    error = assert_shaped(response, 403, "permission_denied")
    assert "METRICS_TOKEN" in error["message"]
    assert b"ibkrgw_" not in response.content


def test_with_a_token_only_its_bearers_can_scrape_from_anywhere(client, settings):
    settings.METRICS_TOKEN = TOKEN
    for address in ("127.0.0.1", "10.0.0.5"):
        response = client.get("/metrics", REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200 and b"ibkrgw_orders" in response.content
        for header in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": TOKEN}):
            response = client.get("/metrics", REMOTE_ADDR=address, **header)
            assert_shaped(response, 401, "not_authenticated")
            assert response["WWW-Authenticate"] == "Bearer"


def test_a_short_token_stops_start_up():
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "ibkrgw.settings", "METRICS_TOKEN": "short"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "METRICS_TOKEN" in result.stderr
