"""A database lease that elects the one process owning the IB connection.

One `BrokerLease` row per name. A process holds the lease while the row names it as `holder` and
`expires_at` is in the future. Taking and renewing are the same single conditional UPDATE ("make me
the holder where I already am, or where the lease has expired"): SQLite runs one writer at a time and
PostgreSQL re-checks the WHERE clause after a concurrent update, so two processes never both succeed.

Times come from each process's clock: hosts must agree to within a few seconds (NTP). A holder that
cannot renew steps down `renew_s` before its lease can expire, so it has stopped before anyone else
may take over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from brokers.models import BrokerLease

logger = logging.getLogger(__name__)

IB_CONNECTION = "ib-connection"


def holder_id() -> str:
    """A name for this process that is unique even when a pid is reused: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def lease_acquire(*, name: str, holder: str, ttl_s: float, now: datetime | None = None) -> bool:
    """Take or renew the lease for `ttl_s` seconds. True when `holder` holds it afterwards.

    Safe to call any number of times, from any number of processes at once.
    """
    now = now or timezone.now()
    expires_at = now + timedelta(seconds=ttl_s)
    updated = BrokerLease.objects.filter(Q(holder=holder) | Q(expires_at__lte=now), name=name).update(
        acquired_at=Case(When(holder=holder, then=F("acquired_at")), default=Value(now)),
        holder=holder,
        renewed_at=now,
        expires_at=expires_at,
    )
    if updated:
        return True
    if BrokerLease.objects.filter(name=name).exists():
        return False
    try:  # first use of this lease: whoever inserts the row first holds it
        with transaction.atomic():
            BrokerLease.objects.create(name=name, holder=holder, acquired_at=now, renewed_at=now, expires_at=expires_at)
    except IntegrityError:
        return False
    return True


def lease_release(*, name: str, holder: str) -> bool:
    """Let the lease expire now (if `holder` holds it), so another process may take it at once."""
    return bool(BrokerLease.objects.filter(name=name, holder=holder).update(expires_at=timezone.now()))


def lease_holder(*, name: str) -> str | None:
    """The current holder, or None when nobody holds an unexpired lease."""
    return (
        BrokerLease.objects.filter(name=name, expires_at__gt=timezone.now())
        .exclude(holder="")
        .values_list("holder", flat=True)
        .first()
    )


class LeaseKeeper:
    """A thread that keeps trying to take the lease and renews it while held.

    `on_change(held)` runs on this thread whenever this process gains or loses the lease.
    """

    def __init__(
        self, *, name: str, holder: str, ttl_s: float, renew_s: float, on_change: Callable[[bool], None]
    ) -> None:
        self.name, self.holder, self.ttl_s, self.renew_s = name, holder, ttl_s, renew_s
        self.held = False
        self._on_change = on_change
        self._renewed_monotonic = 0.0
        self._stop = threading.Event()
        self.first_attempt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.ttl_s)

    def attempt(self) -> bool:
        """One try at taking or renewing the lease; returns whether it is held afterwards."""
        try:
            close_old_connections()
            held = lease_acquire(name=self.name, holder=self.holder, ttl_s=self.ttl_s)
        except Exception:  # the database is away: keep the lease only while it surely still runs
            logger.warning("could not renew the %s lease", self.name, exc_info=True)
            held = self.held and time.monotonic() - self._renewed_monotonic < self.ttl_s - self.renew_s
        if held:
            self._renewed_monotonic = time.monotonic()
        return held

    def tick(self) -> None:
        held = self.attempt()
        if held == self.held:
            return
        logger.warning("%s the %s lease (%s)", "took" if held else "lost", self.name, self.holder)
        try:
            self._on_change(held)
        except Exception:
            logger.exception("could not %s", "take over" if held else "step down cleanly")
            if held:  # holding the lease without serving would block everyone: let another process try
                try:
                    lease_release(name=self.name, holder=self.holder)
                except Exception:
                    logger.warning("could not release the %s lease", self.name, exc_info=True)
                return
        self.held = held

    def _run(self) -> None:
        # The ORM runs here, never on the caller's thread: `start()` may be called with an event loop running.
        try:
            while True:
                try:
                    self.tick()
                except Exception:  # never let ownership handling kill the thread
                    logger.exception("lease keeper failed")
                self.first_attempt.set()
                if self._stop.wait(self.renew_s):
                    break
        finally:
            connection.close()
