"""The database lease that elects the owner of the IB connection."""

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from brokers.models import BrokerLease
from brokers.scaleout import lease
from brokers.scaleout.lease import LeaseKeeper, lease_acquire, lease_holder, lease_release

NAME = "ib-connection"


@pytest.mark.django_db
def test_first_taker_holds_and_others_wait_until_it_expires():
    now = timezone.now()
    assert lease_acquire(name=NAME, holder="a", ttl_s=10, now=now)
    assert not lease_acquire(name=NAME, holder="b", ttl_s=10, now=now + timedelta(seconds=9))
    assert lease_holder(name=NAME) == "a"
    # a renews: its lease runs on from the renewal
    assert lease_acquire(name=NAME, holder="a", ttl_s=10, now=now + timedelta(seconds=2))
    assert not lease_acquire(name=NAME, holder="b", ttl_s=10, now=now + timedelta(seconds=11))


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over():
    start = timezone.now() - timedelta(seconds=30)
    assert lease_acquire(name=NAME, holder="dead", ttl_s=10, now=start)
    assert lease_holder(name=NAME) is None  # expired 20 s ago
    assert lease_acquire(name=NAME, holder="survivor", ttl_s=10)
    row = BrokerLease.objects.get(name=NAME)
    assert row.holder == "survivor"
    assert row.acquired_at > start + timedelta(seconds=10)  # a new tenure, not the dead holder's
    # the dead holder coming back finds it taken
    assert not lease_acquire(name=NAME, holder="dead", ttl_s=10)


@pytest.mark.django_db
def test_renewal_keeps_the_tenure_start():
    first = timezone.now()
    lease_acquire(name=NAME, holder="a", ttl_s=10, now=first)
    lease_acquire(name=NAME, holder="a", ttl_s=10, now=first + timedelta(seconds=2))
    row = BrokerLease.objects.get(name=NAME)
    assert row.acquired_at == first
    assert row.expires_at == first + timedelta(seconds=12)


@pytest.mark.django_db
def test_release_hands_over_at_once_and_only_by_the_holder():
    lease_acquire(name=NAME, holder="a", ttl_s=10)
    assert not lease_release(name=NAME, holder="b")
    assert not lease_acquire(name=NAME, holder="b", ttl_s=10)
    assert lease_release(name=NAME, holder="a")
    assert lease_acquire(name=NAME, holder="b", ttl_s=10)


def _race_for_the_lease(processes: int) -> list[str]:
    """`processes` threads try to take the lease at the same moment; the holders that won."""
    barrier = threading.Barrier(processes)
    won: list[str] = []

    def take(holder: str) -> None:
        barrier.wait()
        try:
            if lease_acquire(name=NAME, holder=holder, ttl_s=10):
                won.append(holder)
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(f"p{i}",)) for i in range(processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return won


@pytest.mark.django_db(transaction=True)
def test_concurrent_takers_of_an_expired_lease_elect_exactly_one():
    lease_acquire(name=NAME, holder="dead", ttl_s=1, now=timezone.now() - timedelta(seconds=5))
    won = _race_for_the_lease(8)
    assert len(won) == 1
    assert lease_holder(name=NAME) == won[0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_takers_elect_exactly_one():
    # No row yet: the insert race is decided by the primary key.
    assert len(_race_for_the_lease(6)) == 1


@pytest.mark.django_db(transaction=True)  # the keeper manages its own connection, as in its thread
def test_keeper_reports_gain_and_loss():
    changes: list[bool] = []
    keeper = LeaseKeeper(name=NAME, holder="me", ttl_s=10, renew_s=2, on_change=changes.append)
    keeper.tick()
    assert changes == [True]
    keeper.tick()  # renewing is no change
    assert changes == [True]
    # someone took it over (we were frozen past expiry, say): step down
    BrokerLease.objects.filter(name=NAME).update(holder="other", expires_at=timezone.now() + timedelta(seconds=10))
    keeper.tick()
    assert changes == [True, False]


@pytest.mark.django_db(transaction=True)
def test_keeper_steps_down_before_its_lease_can_expire_when_the_database_is_away(monkeypatch):
    changes: list[bool] = []
    keeper = LeaseKeeper(name=NAME, holder="me", ttl_s=10, renew_s=2, on_change=changes.append)
    keeper.tick()

    def database_away(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(lease, "lease_acquire", database_away)
    keeper.tick()
    assert changes == [True]  # a failed renewal right after a good one: the lease surely still runs
    keeper._renewed_monotonic -= 8.5  # past ttl - renew since the last good renewal
    keeper.tick()
    assert changes == [True, False]


@pytest.mark.django_db(transaction=True)
def test_a_process_that_cannot_take_over_lets_the_lease_go():
    def broken_start(held: bool) -> None:
        raise RuntimeError("the worker could not start")

    keeper = LeaseKeeper(name=NAME, holder="me", ttl_s=10, renew_s=2, on_change=broken_start)
    keeper.tick()
    assert not keeper.held
    assert lease_acquire(name=NAME, holder="other", ttl_s=10)  # free at once, not after the ttl
