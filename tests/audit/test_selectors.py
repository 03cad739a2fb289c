from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audit import events
from audit.selectors import audit_list
from tests.factories import audit_entry, make_actor

pytestmark = pytest.mark.django_db


def test_audit_list_filters_by_correlation_event_target_and_time():
    a = audit_entry(event=events.ORDER_SUBMITTED, actor=make_actor(correlation_id="cid-a"), target_id="o1")
    time.sleep(0.002)  # distinct created_at values, for the time filters
    b = audit_entry(
        event=events.FILL_RECORDED, actor=make_actor(correlation_id="cid-a"), target_type="fill", target_id="e1"
    )
    time.sleep(0.002)
    c = audit_entry(event=events.ORDER_SUBMITTED, actor=make_actor(correlation_id="cid-b"), target_id="o2")

    assert list(audit_list(correlation_id="cid-a")) == [a, b]
    assert list(audit_list(event=events.ORDER_SUBMITTED)) == [a, c]
    assert list(audit_list(target_type="fill", target_id="e1")) == [b]
    assert list(audit_list(since=b.created_at)) == [b, c]
    assert list(audit_list(until=b.created_at)) == [a]
    assert list(audit_list(since=timezone.now() + timedelta(hours=1))) == []
