"""The read throttle's sliding window (API_READ_RATE), per key, user and address, on a frozen clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser

from ibkrgw import auth
from tests.factories import api_key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock", "three_a_minute")]
US = timedelta(microseconds=1)


class Request:
    def __init__(self, key=None, method="GET", address="10.0.0.1"):
        self.user, self.auth, self.method = AnonymousUser(), key, method
        self.META = {"REMOTE_ADDR": address}
        self.headers: dict = {}


@pytest.fixture
def three_a_minute(settings):
    settings.API_READ_RATE = "3/min"
    auth.read_throttle_reset()
    yield
    auth.read_throttle_reset()


def reads(request, n: int) -> list[bool]:
    return [auth.ReadRateThrottle().allow_request(request, None) for _ in range(n)]


def test_a_caller_reads_its_rate_per_minute_then_waits_for_the_oldest_to_age_out(frozen_clock):
    caller = Request()
    assert reads(caller, 4) == [True, True, True, False]
    throttle = auth.ReadRateThrottle()
    assert throttle.allow_request(caller, None) is False
    assert throttle.wait() == 20  # DRF spreads the minute over the rate: Retry-After 60 / 3
    frozen_clock.shift(timedelta(seconds=30))
    assert reads(caller, 1) == [False]
    frozen_clock.shift(timedelta(seconds=30) - US)
    assert reads(caller, 1) == [False]
    frozen_clock.shift(US)  # exactly a minute after the first three: they no longer count
    assert reads(caller, 4) == [True, True, True, False]


def test_the_window_slides_request_by_request(frozen_clock):
    caller = Request()
    assert reads(caller, 1) == [True]
    frozen_clock.shift(timedelta(seconds=20))
    assert reads(caller, 3) == [True, True, False]
    throttle = auth.ReadRateThrottle()
    assert throttle.allow_request(caller, None) is False
    assert throttle.wait() == pytest.approx(40 / 3)  # counted from the oldest read, 20 s in
    frozen_clock.shift(timedelta(seconds=40))
    assert reads(caller, 2) == [True, False]


def test_each_key_and_address_has_its_own_window_and_orders_are_not_counted():
    key, _ = api_key(name="bot")
    assert reads(Request(), 3) == [True] * 3
    assert reads(Request(address="10.0.0.2"), 3) == [True] * 3
    assert reads(Request(key=key), 3) == [True] * 3
    assert reads(Request(), 1) == [False]
    assert reads(Request(method="POST"), 5) == [True] * 5


def test_callers_gone_quiet_are_forgotten_once_many_are_remembered(frozen_clock, monkeypatch):
    monkeypatch.setattr(auth, "_WINDOWS_SWEEP_AT", 2)
    reads(Request(address="10.0.0.1"), 1)
    frozen_clock.shift(timedelta(seconds=30))
    reads(Request(address="10.0.0.2"), 1)
    frozen_clock.shift(timedelta(seconds=30))  # the first is a minute old, the second half that
    reads(Request(address="10.0.0.3"), 1)
    assert sorted(auth._windows) == ["throttle_read_ip:10.0.0.2", "throttle_read_ip:10.0.0.3"]


def _spend_refused(ident: str, units: int) -> dict | None:
    from ibkrgw.errors import GatewayError

    try:
        auth.read_budget_spend(ident, units)
    except GatewayError as exc:
        assert exc.code == "throttled" and exc.http_status == 429
        return exc.details
    return None


def test_reads_spent_several_at_once_share_the_window_with_rest_and_wait_for_enough_room(frozen_clock):
    key, _ = api_key(scope="read")
    rest = Request(key=key)
    assert reads(rest, 1) == [True]
    frozen_clock.shift(timedelta(seconds=10))
    assert _spend_refused(auth.read_ident(key=key), 3) is not None  # 1 + 3 > 3: none of the three counted
    assert _spend_refused(auth.read_ident(key=key), 2) is None  # 1 + 2: the window is full
    assert reads(rest, 1) == [False]
    details = _spend_refused(auth.read_ident(key=key), 2)  # room for two: the two oldest (0 s, 10 s) must age out
    assert details["retry_after_s"] == pytest.approx(60.0)  # the second oldest, 10 s in, leaves at 70 s
    assert _spend_refused(auth.read_ident(key=key), 4)["asked"] == 4  # never fits the rate: refused at once
    frozen_clock.shift(timedelta(seconds=50))  # the first read (0 s) is out: room for one
    assert _spend_refused(auth.read_ident(key=key), 1) is None
    assert _spend_refused("mcp:stdio", 3) is None  # another caller's window
