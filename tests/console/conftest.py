"""People at the operator console: a superuser, a staff member who may view the ledger, trade and approve, one
who may only trade, one who may only approve, one who may only view, a non-staff user."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from ibkrgw.actors import Actor, ActorKind, Source

PASSWORD = "console-test-pw-1"  # noqa: S105 (a throwaway test password)
AGENT = Actor(kind=ActorKind.MCP, label="mcp:test", source=Source.MCP)
XSS = "<script>alert(1)</script>"
LEDGER_APPS = ("orders", "audit")


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "", PASSWORD)


@pytest.fixture
def superuser_client(superuser) -> Client:
    return _client_for(superuser)


def _ledger_viewer(django_user_model, username: str):
    user = django_user_model.objects.create_user(username, "", PASSWORD, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_", content_type__app_label__in=LEDGER_APPS)
    )
    return user


def _with(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="orders", codename__in=codenames))
    return user


@pytest.fixture
def staff_user(django_user_model):
    """A staff member who may view the ledger, trade and approve."""
    return _with(_ledger_viewer(django_user_model, "staff"), "trade", "approve")


@pytest.fixture
def trader_client(django_user_model) -> Client:
    """A staff member who may view the ledger and trade, not approve."""
    return _client_for(_with(_ledger_viewer(django_user_model, "trader"), "trade"))


@pytest.fixture
def approver_client(django_user_model) -> Client:
    """A staff member who may view the ledger and approve, not trade (a risk officer)."""
    return _client_for(_with(_ledger_viewer(django_user_model, "approver"), "approve"))


@pytest.fixture
def viewer_client(django_user_model) -> Client:
    """A staff member who may view the ledger, not trade."""
    return _client_for(_ledger_viewer(django_user_model, "viewer"))


@pytest.fixture
def staff_client(staff_user) -> Client:
    return _client_for(staff_user)


@pytest.fixture
def user_client(django_user_model) -> Client:
    return _client_for(django_user_model.objects.create_user("someone", "", PASSWORD))


@pytest.fixture
def approval_for_agents(settings, orders_enabled):
    # As tests/orders/test_approval.py: every agent (MCP) order waits for an operator.
    settings.APPROVAL_REQUIRED_FOR = frozenset({"mcp"})
    return settings
