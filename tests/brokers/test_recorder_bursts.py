"""The recorder writes a burst of broker events in one transaction; one broken event costs only itself.

A real recorder thread on the real database: the events of a burst are queued before the thread
starts, so they are handed over as one batch.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import transaction

from audit import events
from audit.models import AuditEntry
from audit.services import audit_record
from brokers.recorder import Recorder
from ibkrgw.actors import Actor


class Broken(Exception):
    pass


def write(item: str) -> None:
    # As the recorder's handlers do: the event's rows, in the transaction it is given.
    with transaction.atomic(savepoint=False):
        audit_record(event=events.BROKER_RECONCILED, actor=Actor.system(), target_type="burst", target_id=item)
        if item.startswith("broken"):
            raise Broken(item)  # after a row was written: that row must not survive


def recorded() -> list[str]:
    return list(AuditEntry.objects.filter(target_type="burst").order_by("seq").values_list("target_id", flat=True))


def run_burst(items: list[str]) -> None:
    recorder = Recorder({str: write}, batchable=frozenset({str}))
    for item in items:
        recorder.put(item)
    recorder.start()
    try:
        assert recorder.wait_idle(30)
    finally:
        recorder.stop()


@pytest.mark.django_db(transaction=True)
def test_a_burst_is_written_in_arrival_order():
    run_burst([f"e{i}" for i in range(20)])
    assert recorded() == [f"e{i}" for i in range(20)]
    call_command("audit_verify")


@pytest.mark.django_db(transaction=True)
def test_a_broken_event_in_a_burst_loses_nothing_of_the_others_and_leaves_none_of_its_own_rows(caplog):
    run_burst(["e1", "e2", "broken", "e3", "e4"])
    assert recorded() == ["e1", "e2", "e3", "e4"]
    assert "batched write failed" in caplog.text
    assert "could not write" in caplog.text  # the broken event itself, after its retries
    call_command("audit_verify")  # every committed row sealed, none of the rolled-back ones
