"""`manage.py apikey` and the API key admin: keys are shown once, revoked keys stop working, both are audited."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit import events
from audit.models import AuditEntry
from ibkrgw.auth import api_key_from_string
from ibkrgw.models import ScopedAPIKey
from tests.factories import api_key

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command("apikey", *args, stdout=out)
    return out.getvalue()


def test_create_prints_a_working_key_once_and_audits_it():
    output = _run("create", "--name", "bot", "--scope", "trade", "--expires-days", "30")
    secret = output.strip().splitlines()[-1]
    key = api_key_from_string(secret)
    assert key is not None and key.name == "bot" and key.scope == "trade" and key.expiry_date is not None
    assert secret not in _run("list")  # only the prefix is ever shown again
    entry = AuditEntry.objects.get(event=events.APIKEY_CREATED)
    assert (entry.target_type, entry.target_id, entry.actor_kind, entry.actor_label, entry.source) == (
        "apikey",
        key.prefix,
        "system",
        "cli",
        "cli",
    )
    assert entry.data["scope"] == "trade"
    assert secret not in str(entry.data)


def test_list_shows_prefix_name_scope_and_state():
    key, _ = api_key(name="reader", scope="read")
    listing = _run("list")
    assert key.prefix in listing and "reader" in listing and "read" in listing and "never" in listing


def test_a_revoked_key_no_longer_authenticates_and_the_revocation_is_audited():
    key, secret = api_key(name="old", scope="trade")
    assert api_key_from_string(secret) is not None
    assert "Revoked" in _run("revoke", key.prefix)
    assert api_key_from_string(secret) is None
    assert ScopedAPIKey.objects.get(pk=key.pk).revoked
    assert AuditEntry.objects.filter(event=events.APIKEY_REVOKED, target_id=key.prefix).count() == 1


def test_revoking_twice_is_harmless_and_audited_once():
    key, _ = api_key()
    _run("revoke", key.prefix)
    assert "already revoked" in _run("revoke", key.prefix)
    assert AuditEntry.objects.filter(event=events.APIKEY_REVOKED).count() == 1


def test_revoking_an_unknown_prefix_fails():
    with pytest.raises(CommandError, match="no API key"):
        _run("revoke", "nope1234")


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--name", "x", "--scope", "admin"],
        ["create", "--name", "", "--scope", "read"],
        ["create", "--name", "x", "--scope", "read", "--expires-days", "0"],
    ],
)
def test_create_rejects_bad_arguments(args):
    with pytest.raises(CommandError):
        _run(*args)
    assert not ScopedAPIKey.objects.exists()


def test_creating_and_revoking_in_the_admin_is_audited(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "pw-for-tests-only"))
    response = client.post(
        "/admin/ibkrgw/scopedapikey/add/",
        {"name": "from-admin", "scope": "read", "expiry_date_0": "", "expiry_date_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    key = ScopedAPIKey.objects.get(name="from-admin")
    assert "you will not be able to see it again" in response.content.decode()
    created = AuditEntry.objects.get(event=events.APIKEY_CREATED)
    assert (created.target_id, created.actor_label, created.source) == (key.prefix, "op", "admin")

    response = client.post(
        f"/admin/ibkrgw/scopedapikey/{key.pk}/change/",
        {"name": "from-admin", "revoked": "on", "expiry_date_0": "", "expiry_date_1": ""},
    )
    assert response.status_code == 302
    assert ScopedAPIKey.objects.get(pk=key.pk).revoked
    assert AuditEntry.objects.filter(event=events.APIKEY_REVOKED, target_id=key.prefix).count() == 1


def test_keys_cannot_be_deleted_in_the_admin(rf, django_user_model):
    from django.contrib import admin

    request = rf.get("/admin/")
    request.user = django_user_model.objects.create_superuser("op", "op@example.com", "pw-for-tests-only")
    assert not admin.site._registry[ScopedAPIKey].has_delete_permission(request)


def test_revoking_in_bulk_needs_the_permission_to_change_keys(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", "", "pw-for-tests-only", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_scopedapikey"))
    client.force_login(viewer)
    key, secret = api_key(scope="trade")
    changelist = "/admin/ibkrgw/scopedapikey/"
    assert "revoke_selected" not in client.get(changelist).content.decode()
    # Before: a staff member who may only look at the keys revoked them all with this one POST.
    client.post(changelist, {"action": "revoke_selected", "_selected_action": [key.pk], "confirmed": "yes"})
    assert not ScopedAPIKey.objects.get(pk=key.pk).revoked
    assert api_key_from_string(secret) is not None
    assert not AuditEntry.objects.filter(event=events.APIKEY_REVOKED).exists()

    viewer.user_permissions.add(Permission.objects.get(codename="change_scopedapikey"))
    client.post(changelist, {"action": "revoke_selected", "_selected_action": [key.pk], "confirmed": "yes"})
    assert ScopedAPIKey.objects.get(pk=key.pk).revoked
    revoked = AuditEntry.objects.get(event=events.APIKEY_REVOKED)
    assert (revoked.target_id, revoked.actor_label, revoked.source) == (key.prefix, "viewer", "admin")


def test_an_expired_key_cannot_be_brought_back_nor_a_key_renamed_in_the_admin(client, django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "pw-for-tests-only"))
    expired = timezone.now() - timedelta(days=1)
    key, secret = api_key(scope="trade", name="ci", expiry_date=expired)
    assert api_key_from_string(secret) is None
    page = client.get(f"/admin/ibkrgw/scopedapikey/{key.pk}/change/").content.decode()
    assert 'name="expiry_date_0"' not in page and 'name="name"' not in page and 'name="revoked"' in page
    # Before: this POST set a later expiry (the key worked again) and a new name, and nothing was audited.
    response = client.post(
        f"/admin/ibkrgw/scopedapikey/{key.pk}/change/",
        {"name": "renamed", "expiry_date_0": "2099-01-01", "expiry_date_1": "00:00:00"},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.expiry_date, key.revoked) == ("ci", expired, False)
    assert api_key_from_string(secret) is None
