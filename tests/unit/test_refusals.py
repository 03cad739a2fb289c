"""Malformed order requests leave an audit entry, bounded per actor and in all, excerpts cut short."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from django.db import IntegrityError, transaction

from audit.models import AuditEntry
from ibkrgw.actors import Actor, ActorKind, Source
from orders import services
from orders.services import refusals

pytestmark = pytest.mark.django_db

BOT = Actor(kind=ActorKind.API_KEY, label="bot", source=Source.REST, correlation_id="cid-r")
OTHER = Actor(kind=ActorKind.API_KEY, label="other", source=Source.REST)


@pytest.fixture(autouse=True)
def _fresh_window():
    refusals.bound_reset()
    yield
    refusals.bound_reset()


def refuse(actor=BOT, **fields):
    values = {"code": "invalid_request", "message": "bad", "details": {}, "actor": actor, "action": "place", "body": {}}
    values.update(fields)
    services.refusal_record(**values)


def recorded(event="request.refused"):
    return list(AuditEntry.objects.filter(event=event).order_by("seq"))


def test_a_refusal_is_audited_with_who_what_and_an_excerpt_of_the_request():
    refuse(
        code="invalid_request",
        message="m" * 600,
        details={"fields": ["quantity"]},
        action="modify",
        body={"quantity": "x" * 2000},
    )
    (entry,) = recorded()
    assert (entry.actor_kind, entry.actor_label, entry.correlation_id, entry.target_type) == (
        "api_key",
        "bot",
        "cid-r",
        "order_request",
    )
    assert entry.data["action"] == "modify"
    assert entry.data["code"] == "invalid_request"
    assert entry.data["message"] == "m" * 500
    assert entry.data["details"] == json.dumps({"fields": ["quantity"]})
    assert entry.data["request"] == json.dumps({"quantity": "x" * 2000})[:1000]
    assert len(entry.data["request"]) == 1000


def test_the_excerpt_is_ascii_so_its_length_bounds_its_size():
    refuse(body={"symbol": "\u00e9" * 2000}, details={"why": "\u00e9"})
    (entry,) = recorded()
    assert entry.data["request"] == ('{"symbol": "' + "\\u00e9" * 2000)[:1000]
    assert entry.data["request"].isascii()
    assert entry.data["details"] == '{"why": "\\u00e9"}'


def test_a_request_that_cannot_be_printed_is_recorded_as_such():
    body: dict = {}
    body["self"] = body  # circular
    refuse(body=body, details={1, 2})
    (entry,) = recorded()
    assert entry.data["request"] == "<unprintable>"
    assert entry.data["details"] == json.dumps(str({1, 2}))


def test_each_actor_gets_thirty_refusals_a_minute(monkeypatch):
    for _ in range(32):
        refuse()
    refuse(actor=OTHER)
    assert [e.actor_label for e in recorded()] == ["bot"] * 30 + ["other"]
    # The minute ends: the suppressed count is written first, then the new window records again.
    monkeypatch.setattr(refusals, "_window_started", time.monotonic() - 60)
    refuse()
    (summary,) = recorded("request.refusals_suppressed")
    assert summary.actor_kind == "system"
    assert summary.target_type == "order_request"
    assert summary.data == {"suppressed_by_actor": {"api_key:bot": 2}, "window_s": 60}
    assert recorded()[-1].seq == summary.seq + 1
    refuse()  # the new window goes on recording
    assert [e.actor_label for e in recorded()][-2:] == ["bot", "bot"]
    assert len(recorded("request.refusals_suppressed")) == 1


def test_refusals_in_all_are_bounded_too(monkeypatch):
    monkeypatch.setattr(refusals, "REFUSALS_PER_MINUTE", 3)
    for i in range(4):
        refuse(actor=Actor(kind=ActorKind.API_KEY, label=f"k{i}", source=Source.REST))
    assert [e.actor_label for e in recorded()] == ["k0", "k1", "k2"]


def test_a_window_that_is_not_over_keeps_counting(monkeypatch):
    monkeypatch.setattr(refusals, "REFUSALS_PER_ACTOR_PER_MINUTE", 1)
    monkeypatch.setattr(refusals, "_window_started", time.monotonic() - 59)
    refuse()
    refuse()
    assert len(recorded()) == 1
    assert recorded("request.refusals_suppressed") == []


def test_suppressed_refusals_with_nothing_new_to_record_are_still_flushed(monkeypatch):
    monkeypatch.setattr(refusals, "REFUSALS_PER_ACTOR_PER_MINUTE", 0)
    refuse()
    assert recorded() == []
    monkeypatch.setattr(refusals, "_window_started", time.monotonic() - 61)
    refuse()
    assert recorded() == []
    assert recorded("request.refusals_suppressed")[0].data["suppressed_by_actor"] == {"api_key:bot": 1}


def test_resetting_the_bound_starts_a_new_window(monkeypatch):
    monkeypatch.setattr(refusals, "REFUSALS_PER_ACTOR_PER_MINUTE", 1)
    refuse()
    refuse()
    refusals.bound_reset()
    refuse()
    assert len(recorded()) == 2
    assert recorded("request.refusals_suppressed") == []


def test_the_window_ends_exactly_a_minute_after_it_started(monkeypatch):
    monkeypatch.setattr(refusals, "REFUSALS_PER_ACTOR_PER_MINUTE", 1)
    clock = [1000.0]
    monkeypatch.setattr(refusals, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(refusals, "_window_started", 1000.0)
    refuse()
    clock[0] = 1059.999
    refuse()
    assert len(recorded()) == 1
    clock[0] = 1060.0
    refuse()
    assert len(recorded()) == 2
    assert recorded("request.refusals_suppressed")[0].data["suppressed_by_actor"] == {"api_key:bot": 1}


def test_a_refusal_that_cannot_be_written_is_logged_and_the_refusal_still_answered(caplog):
    # A transaction already broken by an earlier error: the audit write fails inside it.
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic(savepoint=False):
            raise IntegrityError("an earlier write failed")
        refuse()  # the door answering the refusal gets no exception
    assert "could not audit a refused order request" in caplog.text
    assert recorded() == []
