"""Health's database probes are shared (no database work per health request) and a halt shows at once."""

from __future__ import annotations

import pytest

from brokers.selectors import HEALTH_PROBE_S, health_get, health_probe_cached
from orders.models import TradingSwitchEvent

pytestmark = pytest.mark.django_db


def test_health_requests_share_one_database_probe(client, django_assert_num_queries):
    assert client.get("/api/v1/health/").json()["database"]["ok"] is True
    with django_assert_num_queries(0):
        for _ in range(5):
            assert client.get("/api/v1/health/").status_code == 200


def test_a_halt_recorded_in_this_process_shows_in_health_at_once(client):
    assert client.get("/api/v1/health/").json()["trading_halted"] is False
    TradingSwitchEvent.objects.create(
        halted=True, reason="test", actor_kind="user", actor_label="op", source="admin", correlation_id="c1"
    )
    assert client.get("/api/v1/health/").json()["trading_halted"] is True


def test_the_probe_is_kept_for_a_limited_time():
    health_get()
    assert health_probe_cached() is not None
    assert health_probe_cached(max_age=0) is None  # older than asked for: probed again
    assert health_probe_cached(max_age=HEALTH_PROBE_S) is not None
