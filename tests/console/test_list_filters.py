"""Console lists and their CSV exports filter only as their own filters do, and a bad filter never takes
them down: the list answers `?e=1` (Django's "invalid filter" page), the export goes back to it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orders.models import OrderStatus
from tests.factories import FillFactory, OrderEventFactory, api_key, audit_entry

pytestmark = pytest.mark.django_db

EXPORTS = ("orders_order", "orders_fill", "audit_auditentry")


@pytest.fixture
def rows():
    event = OrderEventFactory(status=OrderStatus.SUBMITTED)
    FillFactory(order=event.order)
    audit_entry()


@pytest.mark.parametrize("name", EXPORTS)
@pytest.mark.parametrize(
    "query",
    [
        "created_at__gte=garbage",
        "executed_at__gte=garbage",
        "created_at__year=abc",
        "created_at__year=2026&created_at__month=13",
    ],
)
def test_an_export_with_a_filter_it_cannot_apply_goes_back_to_the_list(staff_client, rows, name, query):
    response = staff_client.get(reverse(f"admin:{name}_export_csv") + "?" + query)
    # Before: IncorrectLookupParameters escaped the export view, a 500.
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert response["Location"] == reverse(f"admin:{name}_changelist") + "?e=1"


@pytest.mark.parametrize("suffix", ["", "export.csv"])
@pytest.mark.parametrize(
    "query",
    [
        "actor_label__regex=(",  # a bad pattern: the database's regex function raised, a 500
        "client_order_id__startswith=test",  # a field no filter offers
        "request_hash__startswith=0",  # a field the list does not even show
        "symbol__iregex=.",
    ],
)
def test_an_order_list_refuses_lookups_its_filters_do_not_offer(staff_client, rows, suffix, query):
    url = reverse("admin:orders_order_changelist") + suffix + "?" + query
    assert staff_client.get(url).status_code == 400


def test_the_filters_the_lists_offer_still_work(staff_client, rows):
    order_list = reverse("admin:orders_order_changelist")
    for query in (
        "status=submitted",
        "action__exact=BUY",
        "source__exact=rest",
        "created_at__gte=2000-01-01+00%3A00%3A00%2B00%3A00&created_at__lt=2100-01-01+00%3A00%3A00%2B00%3A00",
        "created_at__year=2026",
        "created_at__isnull=False",
        "q=AAPL",
        "o=1",
    ):
        response = staff_client.get(f"{order_list}?{query}")
        assert response.status_code == 200, query
        assert staff_client.get(reverse("admin:orders_order_export_csv") + "?" + query).status_code == 200, query
    fills = reverse("admin:orders_fill_changelist")
    assert staff_client.get(f"{fills}?side__exact=BOT&account=DU1234567").status_code == 200
    audit = reverse("admin:audit_auditentry_changelist")
    assert staff_client.get(f"{audit}?event__exact=order.submitted&created_at__year=2026").status_code == 200


def test_an_api_key_list_does_not_answer_questions_about_the_stored_hash(superuser_client):
    key, _ = api_key()
    keys = reverse("admin:ibkrgw_scopedapikey_changelist")
    # Before: each answered 200, listing the key or not: an oracle for the hash, a character at a time.
    for query in (f"hashed_key__startswith={key.hashed_key[:3]}", f"id__startswith={key.pk[:10]}"):
        assert superuser_client.get(f"{keys}?{query}").status_code == 400, query
    assert superuser_client.get(f"{keys}?scope__exact=read&revoked__exact=0").status_code == 200
