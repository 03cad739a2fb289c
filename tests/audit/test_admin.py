"""The ledger's admin is read-only for everyone, and shows stored text escaped."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from audit.models import AuditEntry, LedgerSeal
from orders.models import Commission, Fill, Order, OrderEvent, TradingSwitchEvent
from tests.factories import FillFactory, OrderEventFactory, audit_entry

pytestmark = pytest.mark.django_db

LEDGER_MODELS = [AuditEntry, LedgerSeal, Order, OrderEvent, Fill, Commission, TradingSwitchEvent]


@pytest.fixture
def superuser():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests-only")


@pytest.mark.parametrize("model", LEDGER_MODELS, ids=lambda m: m.__name__)
def test_ledger_admin_has_no_add_change_or_delete_permission_even_for_superusers(model, superuser):
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/admin/")
    request.user = superuser
    assert model_admin.has_view_permission(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert "delete_selected" not in model_admin.get_actions(request)  # no bulk delete


@pytest.mark.parametrize("model", LEDGER_MODELS, ids=lambda m: m.__name__)
def test_ledger_admin_list_pages_render(model, client, superuser):
    audit_entry()
    OrderEventFactory()
    FillFactory()
    client.force_login(superuser)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert client.get(url).status_code == 200


def test_audit_entry_admin_escapes_stored_data(client, superuser):
    entry = audit_entry(data={"reason": "<script>alert(1)</script>"})
    client.force_login(superuser)
    response = client.get(reverse("admin:audit_auditentry_change", args=[entry.seq]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)</script>" not in body


def test_admin_refuses_a_delete_post(client, superuser):
    entry = audit_entry()
    client.force_login(superuser)
    response = client.post(reverse("admin:audit_auditentry_delete", args=[entry.seq]), {"post": "yes"})
    assert response.status_code == 403
    assert AuditEntry.objects.filter(pk=entry.seq).exists()
