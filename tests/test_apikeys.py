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
