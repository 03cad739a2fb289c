"""Upgrading a database written before seals existed: the migration seals the rows already there."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("audit", "0002_append_only_triggers"), ("orders", "0002_append_only_triggers")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_seals_existing_rows_and_they_verify():
    latest = _latest()
    try:
        old = _migrate(BEFORE)
        Order = old.get_model("orders", "Order")
        Fill = old.get_model("orders", "Fill")
        order = Order.objects.create(
            account="DU1",
            client_order_id="legacy-1",
            request_hash="0" * 64,
            symbol="AAPL",
            sec_type="STK",
            currency="USD",
            action="BUY",
            quantity=Decimal("5"),
            order_type="MKT",
            tif="DAY",
            trading_mode="paper",
            actor_kind="system",
            actor_label="legacy",
            source="cli",
            correlation_id="legacy",
        )
        Fill.objects.create(
            exec_id="legacy.1",
            order=order,
            account="DU1",
            symbol="AAPL",
            side="BOT",
            quantity=Decimal("5"),
            price=Decimal("101.25"),
            executed_at=timezone.now(),
        )
        assert "audit_ledgerseal" not in connection.introspection.table_names()
    finally:
        _migrate(latest)

    from audit.models import LedgerSeal
    from orders.models import Fill as CurrentFill

    assert LedgerSeal.objects.count() == 2
    assert LedgerSeal.objects.filter(table="orders_fill", row_pk=str(CurrentFill.objects.get().pk)).exists()
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "2 ledger rows in 6 tables match 2 seals" in out.getvalue()
    # New rows continue the same chain.
    from tests.factories import FillFactory

    FillFactory()
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "head: seq=" in out.getvalue()
