"""Upgrading a ledger: the migration that introduced seals seals the rows already there, and the one that
keyed them (audit 0004) vouches for those seals under the seal key, kill switch included."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from audit.triggers import missing_triggers

BEFORE = [("audit", "0002_append_only_triggers"), ("orders", "0002_append_only_triggers")]
UNKEYED = "0003_ledger_seal"  # seals, no MAC yet


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

    from audit.models import AuditEntry, LedgerSeal
    from orders.models import Fill as CurrentFill

    # The two rows sealed without a MAC (0003), then the keyed entry vouching for them (0004).
    seals = list(LedgerSeal.objects.order_by("seq"))
    assert [(s.table, s.mac is not None) for s in seals] == [
        ("orders_order", False),
        ("orders_fill", False),
        ("audit_auditentry", True),
    ]
    assert seals[1].row_pk == str(CurrentFill.objects.get().pk)
    entry = AuditEntry.objects.get()
    assert entry.event == "ledger.seals_keyed"
    assert entry.data == {"unkeyed_head": {"seq": 2, "sha256": seals[1].seal_hash}}
    assert missing_triggers(connection) == []
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "3 ledger rows in 6 tables match 3 seals" in out.getvalue()
    # New rows continue the same chain.
    from tests.factories import FillFactory

    FillFactory()
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "head: seq=" in out.getvalue()


def _switch_row(model, *, halted: bool, reason: str):
    return model.objects.create(
        halted=halted, reason=reason, actor_kind="user", actor_label="admin", source="admin", correlation_id="old"
    )


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_to_keyed_seals_keeps_a_halt_and_the_seals_before_it_verify():
    from audit.seal import seal_rows

    latest = _latest()
    unkeyed = [("audit", UNKEYED), *[node for node in latest if node[0] != "audit"]]
    try:
        # A ledger written by the version before keyed seals: rows sealed without a MAC.
        old = _migrate(unkeyed)
        Switch = old.get_model("orders", "TradingSwitchEvent")
        rows = [_switch_row(Switch, halted=False, reason="start"), _switch_row(Switch, halted=True, reason="incident")]
        seal_rows(Switch, [row.pk for row in rows], using="default", keyed=False)
        assert "mac" not in {
            c.name for c in connection.introspection.get_table_description(connection.cursor(), "audit_ledgerseal")
        }
    finally:
        _migrate(latest)

    from audit.models import LedgerSeal
    from orders.models import TradingSwitchEvent
    from orders.selectors import trading_switch_state
    from tests.audit.test_kill_switch_tamper import forge_resume_with_seal
    from tests.audit.test_ledger_seal import verify

    assert missing_triggers(connection) == []
    # Still halted, on a row stated again under the key: the same reason, by the same admin.
    state = trading_switch_state()
    assert (state.halted, state.untrusted) == (True, "")
    newest = TradingSwitchEvent.objects.order_by("-id").first()
    assert (newest.pk, newest.reason, newest.actor_label) == (rows[1].pk + 1, "incident", "admin")
    assert [s.mac is not None for s in LedgerSeal.objects.order_by("seq")] == [False, False, True, True]
    code, out = verify()
    assert code == 0, out

    # The attack a keyless chain let through: a "resumed" row with a seal computed the plain way.
    forged = forge_resume_with_seal()
    state = trading_switch_state()
    assert state.halted is True
    assert f"its newest row {forged} has a seal without a MAC" in state.untrusted
    code, out = verify()
    assert code == 1
    assert f"(orders_tradingswitchevent pk={forged}): no MAC: sealed without the seal key" in out
