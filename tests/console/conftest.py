"""People at the operator console: a superuser, a staff member who may view the ledger, trade and approve, one
who may only trade, one who may only approve, one who may only view, a non-staff user."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from ibkrgw.actors import Actor, ActorKind, Source
from orders import services
from orders.models import OrderEvent
from orders.types import OrderRequest
from tests.conftest import wait_for

PASSWORD = "console-test-pw-1"  # noqa: S105 (a throwaway test password)
AGENT = Actor(kind=ActorKind.MCP, label="mcp:test", source=Source.MCP)
XSS = "<script>alert(1)</script>"
LEDGER_APPS = ("orders", "audit")


def latest_status(order) -> str:
    return OrderEvent.objects.filter(order=order).order_by("-id").first().status


def sent_refs(sim_gateway) -> list[str]:
    """The orders the gateway received, in order, what-if previews left out."""
    return [o.order_ref for o in sim_gateway.received_orders() if not o.what_if]


def resting_limit(sim_gateway, cid: str, qty: str = "1"):
    """A buy limit 2% under the market (inside the 5% price collar), placed by an agent and working at the broker."""
    last = sim_gateway.quote("AAPL")["last"]
    order = services.order_submit(
        request=OrderRequest(
            symbol="AAPL",
            action="BUY",
            quantity=Decimal(qty),
            order_type="LMT",
            limit_price=(last * Decimal("0.98")).quantize(Decimal("0.01")),
            client_order_id=cid,
        ),
        actor=AGENT,
    ).order
    wait_for(lambda: latest_status(order) == "submitted", message="limit order working")
    return order


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
