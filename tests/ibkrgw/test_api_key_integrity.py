"""An API key row changed in the database, behind the gateway's back, grants nothing: every door refuses
the key, `audit_verify` names it, and the admin neither makes it look genuine nor answers 500."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_api_key.crypto import KeyGenerator, concatenate

from ibkrgw.actors import Actor
from ibkrgw.apikeys import apikey_revoke
from ibkrgw.auth import api_key_from_string
from ibkrgw.models import ScopedAPIKey
from tests.audit.test_ledger_seal import text_stored_database
from tests.conftest import wait_for
from tests.factories import api_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _uncached(settings):
    settings.API_KEY_CACHE_S = 0  # every request reads the row as the database has it now


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


def _verify_problems() -> str:
    with pytest.raises(CommandError) as failed:
        call_command("audit_verify", stdout=StringIO())
    return str(failed.value)


def test_an_untouched_key_works_and_verifies():
    key, secret = api_key(scope="trade")
    assert _client(secret).get("/api/v1/audit/").status_code == 200
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "1 API keys match their MACs" in out.getvalue()


def test_a_scope_raised_in_the_database_is_refused_and_named(caplog):
    key, secret = api_key(scope="read")
    _raw("UPDATE ibkrgw_scopedapikey SET scope = 'trade' WHERE id = %s", [key.pk])

    client = _client(secret)
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "1", "order_type": "MKT", "client_order_id": "t-1"}
    answer = client.post("/api/v1/orders/", body, format="json")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "not_authenticated"
    assert client.get("/api/v1/audit/").status_code == 401  # the whole key, not only what was raised
    assert f"API key {key.prefix} refused: its row does not match its MAC" in caplog.text
    assert f"API key {key.prefix}: its row does not match its MAC" in _verify_problems()


def test_an_expiry_moved_into_the_future_is_refused():
    key, secret = api_key(expiry_date=timezone.now() - timedelta(days=1))
    assert _client(secret).get("/api/v1/audit/").status_code == 401
    _raw("UPDATE ibkrgw_scopedapikey SET expiry_date = NULL WHERE id = %s", [key.pk])
    assert _client(secret).get("/api/v1/audit/").status_code == 401


def test_a_key_inserted_with_a_known_secret_is_refused_even_with_another_keys_mac():
    genuine, _ = api_key(scope="read")
    secret, prefix, hashed = KeyGenerator().generate()
    _raw(
        "INSERT INTO ibkrgw_scopedapikey (id, prefix, hashed_key, created, name, revoked, scope, mac) "
        "VALUES (%s, %s, %s, %s, 'planted', %s, 'trade', %s)",
        [concatenate(prefix, hashed), prefix, hashed, timezone.now(), False, genuine.mac],
    )
    assert api_key_from_string(secret) is None
    assert _client(secret).get("/api/v1/audit/").status_code == 401
    assert f"API key {prefix}: its row does not match its MAC" in _verify_problems()


def test_a_revoked_key_restored_from_before_its_revocation_is_refused():
    key, secret = api_key(scope="trade")
    before = ScopedAPIKey.objects.filter(pk=key.pk).values("revoked", "mac").get()
    apikey_revoke(prefix=key.prefix, actor=Actor.system(label="ops"))
    assert _client(secret).get("/api/v1/audit/").status_code == 401

    # A backup's row, MAC and all: the MAC matches the row again, but the audit log holds the revocation.
    _raw("UPDATE ibkrgw_scopedapikey SET revoked = %s, mac = %s WHERE id = %s", [False, before["mac"], key.pk])
    assert ScopedAPIKey.objects.get(pk=key.pk).row_intact()
    assert _client(secret).get("/api/v1/audit/").status_code == 401
    assert f"API key {key.prefix}: revoked in the audit log" in _verify_problems()


def test_the_admin_does_not_make_a_changed_key_look_genuine_but_can_revoke_it(admin_client):
    key, secret = api_key(scope="read")
    _raw("UPDATE ibkrgw_scopedapikey SET scope = 'trade' WHERE id = %s", [key.pk])
    change = reverse("admin:ibkrgw_scopedapikey_change", args=[key.pk])

    listing = admin_client.get(reverse("admin:ibkrgw_scopedapikey_changelist")).content.decode()
    assert 'alt="False"' in listing  # the "MAC ok" column
    saved = admin_client.post(change, {"revoked": ""})
    assert saved.status_code == 200  # the form again, with the error; not a redirect, not a 500
    assert "changed outside the gateway" in saved.content.decode()
    assert not ScopedAPIKey.objects.get(pk=key.pk).row_intact()
    assert _client(secret).get("/api/v1/audit/").status_code == 401

    revoked = admin_client.post(change, {"revoked": "on"})
    assert revoked.status_code == 302
    assert ScopedAPIKey.objects.get(pk=key.pk).revoked
    assert _client(secret).get("/api/v1/audit/").status_code == 401


@pytest.mark.parametrize("column", ["expiry_date", "created"])
def test_a_key_row_that_cannot_be_read_is_refused_named_and_listed_around(admin_client, caplog, column):
    """A value the gateway never writes (text in a date column): every door answers 401, not 500; the
    admin lists the other keys and names this one; audit_verify names it."""
    text_stored_database()
    key, secret = api_key(scope="trade")
    other, _ = api_key(name="other")
    _raw(f"UPDATE ibkrgw_scopedapikey SET {column} = %s WHERE id = %s", ["garbage", key.pk])

    answer = _client(secret).get("/api/v1/audit/")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "not_authenticated"
    assert f"API key {key.prefix} refused: its row cannot be read" in caplog.text
    assert f"API key {key.prefix}: its row cannot be read" in _verify_problems()

    listing = admin_client.get(reverse("admin:ibkrgw_scopedapikey_changelist"))
    assert listing.status_code == 200
    page = listing.content.decode()
    assert other.prefix in page and f"API key {key.prefix}: its row cannot be read" in page
    shown = admin_client.get(reverse("admin:ibkrgw_scopedapikey_change", args=[key.pk]), follow=True)
    assert shown.status_code == 200 and f"API key {key.prefix}: its row cannot be read" in shown.content.decode()


def test_an_order_admitted_after_its_keys_row_became_unreadable_is_refused_not_a_500():
    from ibkrgw.models import api_key_usable

    text_stored_database()
    key, _ = api_key(scope="trade")
    assert api_key_usable(key.pk)
    _raw("UPDATE ibkrgw_scopedapikey SET expiry_date = %s WHERE id = %s", ["garbage", key.pk])
    assert api_key_usable(key.pk) is False


def test_apikey_list_marks_a_changed_key_and_names_an_unreadable_one():
    intact, _ = api_key(name="intact")
    raised, _ = api_key(name="raised")
    broken, _ = api_key(name="broken")
    _raw("UPDATE ibkrgw_scopedapikey SET scope = 'trade' WHERE id = %s", [raised.pk])
    unreadable = connection.vendor == "sqlite"  # PostgreSQL refuses text in a date column
    if unreadable:
        _raw("UPDATE ibkrgw_scopedapikey SET expiry_date = 'garbage' WHERE id = %s", [broken.pk])
    out = StringIO()
    call_command("apikey", "list", stdout=out)
    lines = {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}
    assert " ok " in lines[intact.prefix]
    assert " BAD " in lines[raised.prefix]
    assert ("row cannot be read" in lines[broken.prefix]) is unreadable


@pytest.mark.django_db(transaction=True)
def test_the_running_gateway_shows_a_changed_key_in_health(ib_runtime, read_client, settings):
    """Nobody has to use the key or run audit_verify: the ledger watch checks every key once a pass, and health
    turns degraded (also for a monitor without an API key)."""
    settings.LEDGER_WATCH_ROWS = 500
    key, _ = api_key(scope="read")
    _raw("UPDATE ibkrgw_scopedapikey SET scope = 'trade' WHERE id = %s", [key.pk])

    def found():
        watch = read_client.get("/api/v1/health/").json()["ledger"]["watch"]
        return watch is not None and not watch["intact"] and watch

    watch = wait_for(found, timeout=30, interval=0.2, message="the watch to find the changed key")
    assert any(f"API key {key.prefix}: its row does not match its MAC" in problem for problem in watch["problems"])
    assert APIClient().get("/api/v1/health/").json()["status"] == "degraded"
