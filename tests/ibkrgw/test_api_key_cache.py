"""Verified API keys are cached (no password hash per request) and revocation still takes effect within seconds."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from ibkrgw.auth import api_key_from_string
from ibkrgw.models import ScopedAPIKey
from tests.conftest import wait_for
from tests.factories import api_key

pytestmark = pytest.mark.django_db


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    return client


def test_a_recently_verified_key_costs_no_database_query(settings, django_assert_num_queries):
    settings.API_KEY_CACHE_S = 300
    key, secret = api_key()
    assert api_key_from_string(secret) == key
    with django_assert_num_queries(0):
        assert api_key_from_string(secret) == key
    assert api_key_from_string(secret + "x") is None  # a wrong secret with a cached prefix is still refused


def test_revoking_in_this_process_takes_effect_at_once(settings):
    settings.API_KEY_CACHE_S = 300  # only the revocation itself can explain the 401 below
    key, secret = api_key(scope="trade")
    client = _client(secret)
    assert client.get("/api/v1/audit/").status_code == 200
    call_command("apikey", "revoke", key.prefix, stdout=StringIO())
    response = client.get("/api/v1/audit/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_revoking_elsewhere_takes_effect_within_the_cache_time(settings):
    settings.API_KEY_CACHE_S = 1
    key, secret = api_key()
    client = _client(secret)
    assert client.get("/api/v1/audit/").status_code == 200
    # Another process (`manage.py apikey revoke`, another web process) changes the row: no signal here.
    ScopedAPIKey.objects.filter(pk=key.pk).update(revoked=True)
    wait_for(lambda: client.get("/api/v1/audit/").status_code == 401, timeout=10, message="revocation seen")


def test_a_cached_key_that_expires_stops_working(settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.API_KEY_CACHE_S = 300
    _, secret = api_key(expiry_date=timezone.now() + timedelta(seconds=1))
    client = _client(secret)
    assert client.get("/api/v1/audit/").status_code == 200
    wait_for(lambda: client.get("/api/v1/audit/").status_code == 401, timeout=10, message="expiry seen")


def test_the_cache_can_be_turned_off(settings, django_assert_num_queries):
    settings.API_KEY_CACHE_S = 0
    _, secret = api_key()
    assert api_key_from_string(secret) is not None
    with django_assert_num_queries(2):  # the key's row, and whether the audit log holds its revocation
        assert api_key_from_string(secret) is not None


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_while_a_request_reads_it_is_not_cached_as_usable(settings):
    import threading

    from django.db import connection

    from ibkrgw.actors import Actor
    from ibkrgw.apikeys import apikey_revoke

    settings.API_KEY_CACHE_S = 300
    key, secret = api_key(scope="trade")

    def revoke() -> None:
        try:
            apikey_revoke(prefix=key.prefix, actor=Actor.system(label="ops"))
        finally:
            connection.close()

    revoked = threading.Event()

    def revoke_after_the_key_is_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        # The last read of a key's check: its revocations in the audit log (the row was read before).
        if "audit_auditentry" in sql and not revoked.is_set():
            revoked.set()
            # Another request revokes the key (and answers) after this one has read it, before it is cached.
            thread = threading.Thread(target=revoke)
            thread.start()
            thread.join()
        return result

    with connection.execute_wrapper(revoke_after_the_key_is_read):
        assert api_key_from_string(secret) is not None  # it read the key before the revocation
    assert revoked.is_set() and ScopedAPIKey.objects.get(pk=key.pk).revoked
    # Before: the key read before the revocation stayed in the cache, usable for API_KEY_CACHE_S more.
    assert api_key_from_string(secret) is None
    response = _client(secret).get("/api/v1/audit/")
    assert response.status_code == 401
