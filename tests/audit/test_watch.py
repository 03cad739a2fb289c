"""The running gateway's watch over its ledger: what `audit_verify` finds, found a slice at a time.

Each kind of tampering `audit_verify` names, done here the same way (raw SQL, triggers dropped and put
back), is found by the watch's passes and shown in `GET health/`, while the triggers look untouched.
"""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import override_settings

from audit.models import LedgerSeal
from audit.triggers import APPEND_ONLY_TABLES
from audit.watch import LedgerWatch, ledger_watch, ledger_watch_step
from tests.audit.test_ledger_seal import (
    drop_trigger,
    forge_fill,
    raw,
    restore_triggers,
    rewrite_around_triggers,
    rewrite_fill_with_its_seal,
    small_ledger,
    uuid_column,
    verify,
)
from tests.conftest import wait_for


def one_pass(watch: LedgerWatch, limit: int = 1000) -> int:
    """Step `watch` until it completes a pass; how many steps that took."""
    start = watch.state().passes
    for steps in range(1, limit + 1):
        watch.step()
        if watch.state().passes > start:
            return steps
    pytest.fail("the watch never completed a pass")


@pytest.mark.django_db
def test_a_clean_ledger_passes_a_bounded_slice_at_a_time():
    for _ in range(3):
        small_ledger()
    seals = LedgerSeal.objects.count()
    watch = LedgerWatch(rows=4)
    reached = []
    for _ in range(4):
        watch.step()
        reached.append(watch.state().checked_to_seq)
    assert reached == [4, 8, 12, 16]  # never more than its slice per step
    steps = 4 + one_pass(watch)
    assert steps >= seals // 4
    state = watch.state()
    assert (state.passes, state.problems, state.checked_to_seq) == (1, [], 0)
    assert state.last_pass_at is not None and state.last_pass_at.tzinfo is not None
    assert verify()[0] == 0  # the watch agrees with audit_verify


@pytest.mark.django_db
def test_a_fill_rewritten_around_the_triggers_is_found_while_the_triggers_look_untouched(
    client, read_client_in_test_transaction, caplog
):
    fill = small_ledger()["fill"]
    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")
    with override_settings(LEDGER_WATCH_ROWS=3), caplog.at_level(logging.ERROR, logger="audit.watch"):
        while ledger_watch().state().passes == 0:
            ledger_watch_step()
    expected = f"orders_fill pk={fill.pk}: row differs from its seal (seal seq "
    [problem] = ledger_watch().state().problems
    assert problem.startswith(expected) and problem.endswith('price: sealed "189.42", now "1"')
    assert problem in caplog.text
    ledger = read_client_in_test_transaction.get("/api/v1/health/").json()["ledger"]
    assert ledger["guarded"] is True  # every trigger is back in place: only the seals tell
    assert ledger["watch"]["intact"] is False
    assert ledger["watch"]["problems"] == [problem]
    assert ledger["watch"]["problem_count"] == 1
    assert ledger["watch"]["passes"] >= 1
    # Without credentials: that a row differs, not which row nor its content.
    public = client.get("/api/v1/health/").json()["ledger"]["watch"]
    assert public["intact"] is False and public["problem_count"] == 1
    assert "problems" not in public


@pytest.mark.django_db
def test_problems_stay_shown_on_later_passes_and_are_logged_once(caplog):
    order = small_ledger()["order"]
    rewrite_around_triggers("orders_order", uuid_column(order.pk), "quantity", "999")
    watch = LedgerWatch(rows=2)
    with caplog.at_level(logging.ERROR, logger="audit.watch"):
        for _ in range(3):
            one_pass(watch)
            [problem] = watch.state().problems
            assert f"orders_order pk={order.pk}: row differs from its seal" in problem
            assert 'quantity: sealed "10", now "999"' in problem
    assert caplog.text.count("row differs from its seal") == 1


@pytest.mark.django_db
def test_a_value_that_cannot_be_read_does_not_hide_the_other_changes_of_its_slice(client):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL checks the type of every value it stores")
    rows = small_ledger()
    order, event, fill = rows["order"], rows["event"], rows["fill"]
    rewrite_around_triggers("orders_order", uuid_column(order.pk), "quantity", "abc")
    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")
    rewrite_around_triggers("orders_orderevent", event.pk, "order_id", order.pk.hex.upper())
    with override_settings(LEDGER_WATCH_ROWS=100):  # one slice holds them all
        one_pass(ledger_watch())
    problems = ledger_watch().state().problems
    assert f'orders_order pk={order.pk}: row changed behind the application\'s back: quantity holds "abc"' in "".join(
        problems
    )
    assert any(p.startswith(f"orders_fill pk={fill.pk}: row differs from its seal") for p in problems)
    assert any(p.startswith(f"orders_orderevent pk={event.pk}: row changed") and "order_id" in p for p in problems)
    assert len(problems) == 3
    assert client.get("/api/v1/health/").json()["ledger"]["watch"]["intact"] is False
    rewrite_around_triggers("orders_orderevent", event.pk, "order_id", order.pk.hex)  # the test database checks keys


@pytest.mark.django_db
def test_a_deleted_row_and_a_row_inserted_with_raw_sql_are_found():
    rows = small_ledger()
    drop_trigger("orders_tradingswitchevent", "delete")
    raw("DELETE FROM orders_tradingswitchevent WHERE id = %s", [rows["switch"].pk])
    forged = forge_fill(rows["order"], rows["fill"])
    watch = LedgerWatch(rows=2)
    one_pass(watch)
    problems = watch.state().problems
    assert any(p.startswith(f"orders_tradingswitchevent pk={rows['switch'].pk}: row is gone") for p in problems)
    assert any(p.startswith(f"orders_fill pk={forged}: row has no seal") for p in problems)
    assert len(problems) == 2


@pytest.mark.django_db
def test_a_ledger_rewritten_wholesale_costs_bounded_memory_and_log(ledger_triggers_dropped, monkeypatch, caplog):
    monkeypatch.setattr("audit.watch.MAX_KEPT", 3)
    for _ in range(3):
        small_ledger()
    raw("DELETE FROM audit_ledgerseal")  # every row now has no seal: 18 problems
    watch = LedgerWatch(rows=5)
    with caplog.at_level(logging.ERROR, logger="audit.watch"):
        one_pass(watch)
        one_pass(watch)
    state = watch.state()
    assert state.problem_count == 3 and len(state.problems) == 3
    assert all("row has no seal" in problem for problem in state.problems)
    assert caplog.text.count("row has no seal") == 3
    assert caplog.text.count("more than 3 problems; no more are logged") == 1


@pytest.mark.django_db
def test_a_rewritten_seal_breaks_the_chain_and_the_walk_starts_over(ledger_triggers_dropped):
    rows = small_ledger()
    fill = rows["fill"]
    seal, _ = rewrite_fill_with_its_seal(fill)
    watch = LedgerWatch(rows=100)
    for _ in range(2):  # each pass stops at the break and the next walks from seq 1 again
        one_pass(watch)
        problems = watch.state().problems
        assert f"seal chain BROKEN at seal seq {seal.seq} (orders_fill pk={fill.pk}): MAC mismatch" in problems[0]
    assert watch.state().passes == 2


@pytest.mark.django_db
def test_the_newest_rows_deleted_with_their_seals_are_found_as_a_chain_cut_short(ledger_triggers_dropped):
    small_ledger()
    watch = LedgerWatch(rows=100)
    one_pass(watch)
    assert watch.state().problems == []
    last = LedgerSeal.objects.order_by("-seq").first()
    assert last.table == "audit_auditentry"  # small_ledger's last row: an audit entry
    # The newest audit entry and its seal removed together: the chain left is whole, only shorter.
    raw("DELETE FROM audit_auditentry WHERE seq = (SELECT MAX(seq) FROM audit_auditentry)")
    raw("DELETE FROM audit_ledgerseal WHERE seq = %s", [last.seq])
    restore_triggers(*APPEND_ONLY_TABLES)
    assert verify()[0] == 0  # audit_verify alone, without an anchor, cannot tell
    one_pass(watch)
    [problem] = watch.state().problems
    assert problem.startswith(f"seal chain cut short: it ends at seal seq {last.seq - 1}, ")
    assert f"walked seal seq {last.seq} before" in problem


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_running_gateway_finds_a_rewritten_fill_by_itself(ib_runtime, read_client, settings):
    """The housekeeping thread of the process that owns the IB connection runs the watch."""
    settings.LEDGER_WATCH_ROWS = 500
    fill = small_ledger()["fill"]
    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")

    def found():
        watch = read_client.get("/api/v1/health/").json()["ledger"]["watch"]
        return watch is not None and not watch["intact"] and watch

    watch = wait_for(found, timeout=30, interval=0.2, message="the watch to find the rewritten fill")
    assert f"orders_fill pk={fill.pk}: row differs from its seal" in watch["problems"][0]
