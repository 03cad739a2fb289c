"""The kill switch from the dashboard: halting needs a confirmation; only a superuser can release it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEntry
from orders.selectors import trading_halted, trading_switch_latest

pytestmark = pytest.mark.django_db

HALT = reverse("admin:ibkrgw_trading_halt")
RESUME = reverse("admin:ibkrgw_trading_resume")
DASHBOARD = reverse("admin:ibkrgw_dashboard")


def _halt(client, reason="incident 42"):
    return client.post(HALT, {"reason": reason, "confirm": "on"}, follow=True)


def test_halt_shows_a_confirmation_page_first(staff_client):
    response = staff_client.get(HALT)
    assert response.status_code == 200
    assert 'name="confirm"' in response.content.decode()
    assert not trading_halted()


@pytest.mark.parametrize("data", [{"reason": "no tick"}, {"confirm": "on"}, {}])
def test_halt_without_confirmation_and_reason_changes_nothing(staff_client, data):
    response = staff_client.post(HALT, data)
    assert response.status_code == 200  # the form again, with its errors
    assert response.context["form"].errors
    assert not trading_halted()


def test_staff_can_halt_from_the_dashboard(staff_client, staff_user):
    response = _halt(staff_client)
    assert response.redirect_chain[-1] == (DASHBOARD, 302)
    assert trading_halted()
    latest = trading_switch_latest()
    assert (latest.actor_label, latest.source, latest.reason) == ("staff", "admin", "incident 42")
    assert AuditEntry.objects.filter(event="trading.halted", actor_label="staff", source="admin").count() == 1
    body = response.content.decode()
    assert "Trading halted" in body  # the message
    assert "TRADING HALTED" in body  # the dashboard's state and the header badge
    # A staff member who is not a superuser is not offered the release.
    assert 'id="ibkrgw-resume"' not in body


def test_staff_who_is_not_superuser_cannot_resume(staff_client):
    _halt(staff_client)
    assert staff_client.get(RESUME).status_code == 403
    response = staff_client.post(RESUME, {"reason": "let me", "confirm": "on"})
    assert response.status_code == 403
    assert trading_halted()
    assert not AuditEntry.objects.filter(event="trading.resumed").exists()


def test_superuser_resumes_after_confirming(staff_client, superuser_client):
    _halt(staff_client)
    assert 'id="ibkrgw-resume"' in superuser_client.get(DASHBOARD).content.decode()
    assert superuser_client.get(RESUME).status_code == 200

    unconfirmed = superuser_client.post(RESUME, {"reason": "all clear"})
    assert unconfirmed.status_code == 200 and trading_halted()

    response = superuser_client.post(RESUME, {"reason": "all clear", "confirm": "on"}, follow=True)
    assert response.redirect_chain[-1] == (DASHBOARD, 302)
    assert not trading_halted()
    assert trading_switch_latest().actor_label == "root"
    assert "Trading resumed." in response.content.decode()


def test_halt_and_resume_are_refused_to_non_staff(user_client, client):
    for who in (user_client, client):
        assert who.post(HALT, {"reason": "x", "confirm": "on"}).status_code == 302  # to the login
    assert not trading_halted()


def test_the_confirmation_page_names_the_zone_of_the_last_change(staff_client, superuser_client):
    """The last change showed "halted 2026-12-04 13:20:53 by …" with no zone, where the dashboard above it
    says "… 13:20:53 UTC": an operator elsewhere could not tell when trading was halted."""
    _halt(staff_client)
    at = trading_switch_latest().at
    body = superuser_client.get(RESUME).content.decode()
    assert f"Last change: halted {at:%Y-%m-%d %H:%M:%S} UTC by " in body
