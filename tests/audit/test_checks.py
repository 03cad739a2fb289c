"""System check audit.E001 and `ledger_triggers_missing()`: missing triggers are reported."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from audit.checks import check_ledger_triggers, ledger_triggers_missing
from audit.triggers import APPEND_ONLY_TABLES

pytestmark = pytest.mark.django_db


def test_no_trigger_is_missing_after_migrate():
    assert ledger_triggers_missing() == []
    assert check_ledger_triggers(databases=["default"]) == []
    call_command("check", "--database", "default")


def test_a_dropped_trigger_is_reported_by_name():
    with connection.cursor() as cursor:
        on_table = " ON orders_fill" if connection.vendor == "postgresql" else ""
        cursor.execute(f"DROP TRIGGER orders_fill_no_delete{on_table}")
    assert ledger_triggers_missing() == ["orders_fill.orders_fill_no_delete"]
    [error] = check_ledger_triggers(databases=["default"])
    assert error.id == "audit.E001"
    assert "orders_fill_no_delete" in error.msg
    with pytest.raises(SystemCheckError, match="audit.E001"):
        call_command("check", "--database", "default")


def test_every_ledger_table_is_covered_when_all_triggers_are_dropped(ledger_triggers_dropped):
    missing = ledger_triggers_missing()
    per_table = 3  # update, delete, and TRUNCATE on PostgreSQL, INSERT OR REPLACE on SQLite
    assert len(missing) == per_table * len(APPEND_ONLY_TABLES)
    assert {name.split(".")[0] for name in missing} == set(APPEND_ONLY_TABLES)


def test_the_check_only_looks_at_databases_it_is_given(ledger_triggers_dropped):
    # A plain `manage.py check` must stay fast and offline.
    assert check_ledger_triggers(databases=None) == []


@pytest.fixture
def fresh_health():
    from brokers.selectors import health_probe_forget

    health_probe_forget()
    yield
    health_probe_forget()


def test_health_says_whether_the_ledger_is_still_guarded(client, read_client_in_test_transaction, fresh_health, caplog):
    from brokers.selectors import health_probe_forget

    # No watch runs in this process (no IB connection here): `watch` is null.
    anonymous, client = client, read_client_in_test_transaction
    assert client.get("/api/v1/health/").json()["ledger"] == {"guarded": True, "missing_triggers": [], "watch": None}
    with connection.cursor() as cursor:  # as someone with the database would
        on_table = " ON orders_order" if connection.vendor == "postgresql" else ""
        cursor.execute(f"DROP TRIGGER orders_order_no_update{on_table}")
    health_probe_forget()  # health's probe is shared for a second: ask again now
    ledger = client.get("/api/v1/health/").json()["ledger"]
    assert ledger == {"guarded": False, "missing_triggers": ["orders_order.orders_order_no_update"], "watch": None}
    # Without credentials: that the ledger is unguarded, not which trigger is gone.
    assert anonymous.get("/api/v1/health/").json()["ledger"] == {"guarded": False, "watch": None}
    assert "ledger triggers missing, disabled or altered: orders_order.orders_order_no_update" in caplog.text
