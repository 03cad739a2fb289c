"""Tamper evidence for the whole ledger: every row is sealed at insert, and `audit_verify` finds any change.

Each tamper below is done the way someone holding the database would do it (raw SQL, INSERT OR
REPLACE, a dropped trigger, a restored table), and `audit_verify` must exit 1 naming the row.
On PostgreSQL, where INSERT OR REPLACE does not exist, the same rewrite goes around the triggers
with `session_replication_role = replica` (which leaves them in place, so only the seals see it).
"""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from audit.models import AuditEntry, LedgerSeal
from audit.seal import GENESIS_HASH, Seal, pk_text, read_contents, seal_hash, seal_keys, seal_mac, sealed_models
from audit.triggers import APPEND_ONLY_TABLES, create_triggers
from orders.models import Commission, Fill, Order, OrderEvent, TradingSwitchEvent
from tests.factories import (
    CommissionFactory,
    FillFactory,
    OrderEventFactory,
    OrderFactory,
    TradingSwitchEventFactory,
    audit_entry,
)

LEDGER = (Order, OrderEvent, Fill, Commission, TradingSwitchEvent, AuditEntry)


def verify(*args: str) -> tuple[int, str]:
    """Run `manage.py audit_verify`; its exit code and what it printed (or the error it exited with)."""
    out = StringIO()
    try:
        call_command("audit_verify", *args, stdout=out)
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue()


def raw(sql: str, params: list | tuple = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def drop_trigger(table: str, operation: str) -> None:
    on_table = f" ON {table}" if connection.vendor == "postgresql" else ""
    raw(f"DROP TRIGGER {table}_no_{operation}{on_table}")


class _RawEditor:
    """Just enough of a schema editor for `create_triggers`, usable inside the test's transaction."""

    connection = connection

    def quote_name(self, name: str) -> str:
        return connection.ops.quote_name(name)

    def execute(self, sql: str) -> None:
        raw(sql)


def restore_triggers(*tables: str) -> None:
    for table in tables:
        create_triggers(_RawEditor(), table)


def rewrite_around_triggers(table: str, pk, column: str, value, *, pk_column: str = "id") -> None:
    """Change one column of a row, leaving the update and delete triggers in place and enabled.

    SQLite: INSERT OR REPLACE, with the trigger that refuses it dropped for that statement only and
    made again (someone who can write the database file can do that; the triggers look untouched)."""
    if connection.vendor == "sqlite":
        (row,) = raw(f"SELECT * FROM {table} WHERE {pk_column} = %s", [pk])
        columns = [c.name for c in connection.introspection.get_table_description(connection.cursor(), table)]
        values = [value if name == column else old for name, old in zip(columns, row, strict=True)]
        drop_trigger(table, "replace")
        replace_row(table, columns, values)
        restore_triggers(table)
    else:
        raw("SET session_replication_role = replica")
        try:
            raw(f"UPDATE {table} SET {column} = %s WHERE {pk_column} = %s", [value, pk])
        finally:
            raw("SET session_replication_role = origin")


def replace_row(table: str, columns: list[str], values: list) -> None:
    marks = ", ".join(["%s"] * len(columns))
    raw(f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)


def forge_fill(order, like: Fill) -> int:
    """A fill nobody traded, inserted with raw SQL (INSERT is what the triggers allow); its pk."""
    raw(
        "INSERT INTO orders_fill (exec_id, order_id, account, symbol, side, quantity, price, executed_at, "
        "exchange, order_ref, created_at) VALUES (%s, %s, %s, 'AAPL', 'SLD', 10, 250, %s, '', '', %s)",
        ["forged.1", uuid_column(order.pk), "DU1234567", like.executed_at, like.created_at],
    )
    return Fill.objects.get(exec_id="forged.1").pk


def rewrite_fill_with_its_seal(fill) -> tuple[LedgerSeal, Seal]:
    """Set `fill`'s price (189.42) to 1 and rewrite its seal to match, hash recomputed, MAC left as it was
    (with the update triggers dropped); returns the seal as it was and as it was rewritten."""
    raw("UPDATE orders_fill SET price = %s WHERE id = %s", ["1.00", fill.pk])
    seal = LedgerSeal.objects.get(table="orders_fill", row_pk=str(fill.pk))
    forged = Seal(seal.seq, seal.table, seal.row_pk, seal.content.replace('"189.42"', '"1"'), seal.prev_hash)
    raw(
        "UPDATE audit_ledgerseal SET content = %s, seal_hash = %s WHERE seq = %s",
        [forged.content, seal_hash(forged), seal.seq],
    )
    return seal, forged


def append_plain_seal(model, pk, *, key: bytes | None = None, mac: str | None = None) -> int:
    """Seal a row with raw SQL after the head, hashed exactly as the application does: what anyone who can
    write the database can do. Its MAC: none, one made with `key`, or `mac` as given. Returns the seal's seq."""
    content = read_contents(model, [pk], connection.alias)[pk_text(pk)]
    last = raw("SELECT seq, seal_hash FROM audit_ledgerseal ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS_HASH)
    seal = Seal(seq, model._meta.db_table, pk_text(pk), content, prev_hash)
    hashed = seal_hash(seal)
    raw(
        'INSERT INTO audit_ledgerseal (seq, "table", row_pk, content, prev_hash, seal_hash, mac) '
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [seq, seal.table, seal.row_pk, content, prev_hash, hashed, seal_mac(hashed, key) if key else mac],
    )
    return seq


def small_ledger() -> dict:
    order = OrderFactory(quantity=Decimal("10"), limit_price=Decimal("189.50"))
    event = OrderEventFactory(order=order)
    fill = FillFactory(order=order, price=Decimal("189.42"))
    commission = CommissionFactory(fill=fill)
    switch = TradingSwitchEventFactory()
    entry = audit_entry(target_id=str(order.pk))
    return {"order": order, "event": event, "fill": fill, "commission": commission, "switch": switch, "entry": entry}


def uuid_column(pk) -> str:
    # Django stores a UUID as 32 hex digits on SQLite and as uuid on PostgreSQL.
    return pk.hex if connection.vendor == "sqlite" else str(pk)


# -- sealing ----------------------------------------------------------------------------------------------


def test_every_ledger_table_is_sealed():
    assert {m._meta.db_table for m in sealed_models()} == set(APPEND_ONLY_TABLES) - {"audit_ledgerseal"}


# The NOT NULL columns of each ledger table when its rows are sealed. Existing seals cover exactly these
# (NULL columns are left out of a row's content), so a new NOT NULL column, or one removed, would make
# every row already in a production ledger fail `audit_verify`. Add new ledger columns as nullable.
SEALED_NOT_NULL_COLUMNS = {
    "audit_auditentry": {
        "actor_kind",
        "actor_label",
        "correlation_id",
        "created_at",
        "data",
        "entry_hash",
        "event",
        "prev_hash",
        "seq",
        "source",
        "target_id",
        "target_type",
    },
    "orders_commission": {"commission", "created_at", "currency", "exec_id", "fill_id", "id"},
    "orders_fill": {
        "account",
        "created_at",
        "exchange",
        "exec_id",
        "executed_at",
        "id",
        "order_ref",
        "price",
        "quantity",
        "side",
        "symbol",
    },
    "orders_order": {
        "account",
        "action",
        "actor_kind",
        "actor_label",
        "client_order_id",
        "correlation_id",
        "created_at",
        "currency",
        "exchange",
        "expiry",
        "id",
        "local_symbol",
        "multiplier",
        "oca_group",
        "order_type",
        "outside_rth",
        "primary_exchange",
        "quantity",
        "request_hash",
        "right",
        "role",
        "sec_type",
        "source",
        "symbol",
        "tif",
        "trading_mode",
    },
    "orders_orderevent": {"at", "code", "data", "filled_quantity", "id", "order_id", "reason", "source", "status"},
    "orders_tradingswitchevent": {
        "actor_kind",
        "actor_label",
        "at",
        "correlation_id",
        "halted",
        "id",
        "reason",
        "source",
    },
}


def test_ledger_columns_that_existing_seals_cover_are_unchanged():
    current = {m._meta.db_table: {f.column for f in m._meta.concrete_fields if not f.null} for m in sealed_models()}
    assert current == SEALED_NOT_NULL_COLUMNS, (
        "A NOT NULL ledger column was added or removed: every row sealed before would then fail audit_verify. "
        "Make a new column nullable (see docs/audit.md, 'Upgrading and changing the ledger')."
    )


@pytest.mark.django_db
def test_every_insert_appends_one_chained_seal_of_the_row_as_stored():
    rows = small_ledger()
    seals = list(LedgerSeal.objects.order_by("seq"))
    assert len(seals) == sum(m.objects.count() for m in LEDGER) == 6
    assert seals[0].prev_hash == GENESIS_HASH
    for before, after in zip(seals, seals[1:], strict=False):
        assert after.prev_hash == before.seal_hash
        assert after.seq == before.seq + 1
    fill_seal = LedgerSeal.objects.get(table="orders_fill", row_pk=str(rows["fill"].pk))
    content = json.loads(fill_seal.content)
    assert content["price"] == "189.42" and content["quantity"] == "10"
    assert content["order_id"] == str(rows["order"].pk)
    assert fill_seal.seal_hash == seal_hash(fill_seal)
    code, out = verify()
    assert code == 0, out
    assert "6 ledger rows in 6 tables match 6 seals" in out
    assert f"head: seq={seals[-1].seq} sha256={seals[-1].seal_hash}" in out


@pytest.mark.django_db
def test_what_the_database_keeps_is_what_is_sealed():
    # 20 significant digits: SQLite keeps 15 of them, PostgreSQL all; either way the seal matches the row.
    FillFactory(price=Decimal("123456789012.12345678"), quantity=Decimal("0.00000001"))
    OrderFactory(preview={"b": 1.0, "a": [1e16, 0.1], "s": "é"})
    code, out = verify()
    assert code == 0, out


@pytest.mark.django_db(transaction=True)
def test_a_row_written_outside_a_transaction_is_sealed_with_it_and_a_failed_insert_leaves_no_seal():
    fill = FillFactory()  # autocommit: the row and its seal are one transaction all the same
    seals = LedgerSeal.objects.count()
    with pytest.raises(IntegrityError), transaction.atomic():
        FillFactory(exec_id=fill.exec_id)
    with transaction.atomic():
        TradingSwitchEventFactory()
        transaction.set_rollback(True)
    assert LedgerSeal.objects.count() == seals
    TradingSwitchEventFactory()
    assert LedgerSeal.objects.count() == seals + 1
    code, out = verify()
    assert code == 0, out


@pytest.mark.django_db
def test_bulk_created_rows_are_sealed_and_skipping_conflicts_is_refused():
    order = OrderFactory()
    OrderEvent.objects.bulk_create([OrderEvent(order=order, status="submitted") for _ in range(3)])
    assert LedgerSeal.objects.filter(table="orders_orderevent").count() == 3
    assert verify()[0] == 0
    from ibkrgw.errors import AppendOnlyViolation

    with pytest.raises(AppendOnlyViolation, match="ignore_conflicts"):
        OrderEvent.objects.bulk_create([OrderEvent(order=order, status="submitted")], ignore_conflicts=True)


# -- tampering: each one makes audit_verify exit 1 and name the row ---------------------------------------


@pytest.mark.django_db
def test_a_fill_price_rewritten_around_the_triggers_is_named():
    fill = small_ledger()["fill"]
    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")
    assert Fill.objects.get(pk=fill.pk).price == Decimal("1.00")
    code, out = verify()
    assert code == 1
    assert f"orders_fill pk={fill.pk}: row differs from its seal" in out
    assert 'price: sealed "189.42", now "1"' in out
    assert "trigger" not in out  # the triggers are all still there: only the seal saw it


@pytest.mark.django_db
def test_an_order_quantity_rewritten_around_the_triggers_is_named():
    order = small_ledger()["order"]
    rewrite_around_triggers("orders_order", uuid_column(order.pk), "quantity", "999")
    code, out = verify()
    assert code == 1
    assert f"orders_order pk={order.pk}: row differs from its seal" in out
    assert 'quantity: sealed "10", now "999"' in out


@pytest.mark.django_db
def test_an_update_after_dropping_a_trigger_is_named_with_the_missing_trigger():
    rows = small_ledger()
    drop_trigger("orders_commission", "update")
    raw("UPDATE orders_commission SET commission = %s WHERE id = %s", ["0.01", rows["commission"].pk])
    code, out = verify()
    assert code == 1
    assert "missing, disabled or altered" in out and "orders_commission.orders_commission_no_update" in out
    assert f"orders_commission pk={rows['commission'].pk}: row differs from its seal" in out
    assert 'commission: sealed "1", now "0.01"' in out


@pytest.mark.django_db
def test_a_row_deleted_after_dropping_a_trigger_is_named():
    rows = small_ledger()
    drop_trigger("orders_tradingswitchevent", "delete")
    raw("DELETE FROM orders_tradingswitchevent WHERE id = %s", [rows["switch"].pk])
    code, out = verify()
    assert code == 1
    assert f"orders_tradingswitchevent pk={rows['switch'].pk}: row is gone" in out


@pytest.mark.django_db
def test_a_row_inserted_with_raw_sql_is_named():
    rows = small_ledger()
    forged = forge_fill(rows["order"], rows["fill"])  # INSERT is what the triggers allow
    code, out = verify()
    assert code == 1
    assert f"orders_fill pk={forged}: row has no seal" in out


@pytest.mark.django_db
def test_an_older_backup_of_one_table_restored_is_named():
    order = small_ledger()["order"]
    backup = raw("SELECT * FROM orders_orderevent ORDER BY id")
    later = [OrderEventFactory(order=order, status="submitted"), OrderEventFactory(order=order, status="filled")]
    assert verify()[0] == 0
    # Restore the table from the backup, triggers and all, as an operator with the file could.
    drop_trigger("orders_orderevent", "delete")
    raw("DELETE FROM orders_orderevent")
    marks = ", ".join(["%s"] * len(backup[0]))
    for row in backup:
        raw(f"INSERT INTO orders_orderevent VALUES ({marks})", row)
    restore_triggers("orders_orderevent")
    code, out = verify()
    assert code == 1
    assert "trigger" not in out
    for event in later:
        assert f"orders_orderevent pk={event.pk}: row is gone" in out


def text_stored_database() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL checks the type of every value it stores, and stores each value one way")


@pytest.mark.django_db
def test_a_value_that_cannot_be_read_is_named_and_the_rest_of_the_ledger_is_still_verified():
    text_stored_database()
    rows = small_ledger()
    order, fill = rows["order"], rows["fill"]
    rewrite_around_triggers("orders_order", uuid_column(order.pk), "quantity", "abc")
    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")
    rewrite_around_triggers("orders_fill", fill.pk, "executed_at", "2026-13-45 99:00:00")
    code, out = verify()
    assert code == 1
    assert (
        f'orders_order pk={order.pk}: row changed behind the application\'s back: quantity holds "abc", '
        "which is not a valid DecimalField"
    ) in out
    assert f"orders_fill pk={fill.pk}: row changed behind the application's back: executed_at holds" in out
    assert f"orders_commission pk={rows['commission'].pk}" not in out  # the rows after them were read, and match


@pytest.mark.django_db
def test_a_key_or_a_time_written_in_another_form_of_the_same_value_is_named():
    """SQLite compares the stored text: the same value written another way still matches its seal's content,
    but the gateway's lookups no longer find it (an order loses its events, a time window miscounts)."""
    text_stored_database()
    rows = small_ledger()
    order, event, fill = rows["order"], rows["event"], rows["fill"]
    assert verify()[0] == 0
    rewrite_around_triggers("orders_orderevent", event.pk, "order_id", order.pk.hex.upper())
    minus_one_hour = fill.created_at.astimezone(timezone(timedelta(hours=-1))).isoformat(" ")
    rewrite_around_triggers("orders_fill", fill.pk, "created_at", minus_one_hour)
    assert not OrderEvent.objects.filter(order=order).exists()  # what the rewrite did to the gateway's view
    code, out = verify()
    assert code == 1
    assert (
        f"orders_orderevent pk={event.pk}: row changed behind the application's back: order_id is stored as "
        f'"{order.pk.hex.upper()}", a form the gateway never writes ("{order.pk.hex}")'
    ) in out
    assert f"orders_fill pk={fill.pk}: row changed behind the application's back: created_at is stored as \"" in out
    assert "row differs" not in out  # the values are the same: only how they are stored changed
    rewrite_around_triggers("orders_orderevent", event.pk, "order_id", order.pk.hex)  # the test database checks keys


@pytest.mark.django_db
def test_a_missing_trigger_alone_fails_verification():
    small_ledger()
    drop_trigger("orders_fill", "delete")
    code, out = verify()
    assert code == 1
    assert "missing, disabled or altered" in out and "orders_fill.orders_fill_no_delete" in out


@pytest.mark.django_db
def test_rewriting_a_row_and_its_seal_breaks_the_seal_chain(ledger_triggers_dropped):
    rows = small_ledger()
    fill = rows["fill"]
    seal, forged = rewrite_fill_with_its_seal(fill)
    code, out = verify()
    assert code == 1
    # Without the seal key, the rewritten seal's own MAC gives it away.
    assert f"seal chain BROKEN at seal seq {seal.seq} (orders_fill pk={fill.pk}): MAC mismatch" in out
    assert f"orders_fill pk={fill.pk}: row differs" not in out  # the row matches its forged seal
    # Even with the key, the next seal still chains to the old hash.
    raw("UPDATE audit_ledgerseal SET mac = %s WHERE seq = %s", [seal_mac(seal_hash(forged), seal_keys()[0]), seal.seq])
    code, out = verify()
    assert code == 1
    assert f"seal chain BROKEN at seal seq {seal.seq + 1}" in out and "prev_hash mismatch" in out


@pytest.mark.django_db
def test_an_anchored_head_catches_a_rewrite_of_the_whole_chain_and_a_truncation():
    rows = small_ledger()
    printed = StringIO()
    call_command("audit_verify", "--head", stdout=printed)
    head = json.loads(printed.getvalue())
    last = LedgerSeal.objects.order_by("-seq").first()
    assert (head["seq"], head["sha256"]) == (last.seq, last.seal_hash)
    anchor = f"{head['seq']}:{head['sha256']}"
    assert verify("--anchor", anchor)[0] == 0

    # Someone holding the file *and the seal key* rewrites a fill and recomputes every seal from it onwards.
    drop_trigger("orders_fill", "update")
    drop_trigger("audit_ledgerseal", "update")
    fill = rows["fill"]
    raw("UPDATE orders_fill SET price = %s WHERE id = %s", ["1.00", fill.pk])
    seals = list(LedgerSeal.objects.order_by("seq"))
    prev = None
    for seal in seals:
        content = seal.content.replace('"189.42"', '"1"') if seal.table == "orders_fill" else seal.content
        forged = Seal(seal.seq, seal.table, seal.row_pk, content, prev or seal.prev_hash)
        prev = seal_hash(forged)
        raw(
            "UPDATE audit_ledgerseal SET content = %s, seal_hash = %s, prev_hash = %s, mac = %s WHERE seq = %s",
            [content, prev, forged.prev_hash, seal_mac(prev, seal_keys()[0]), seal.seq],
        )
    restore_triggers(*APPEND_ONLY_TABLES)
    assert verify()[0] == 0  # internally consistent, and keyed: only something kept outside can tell
    code, out = verify("--anchor", anchor)
    assert code == 1
    assert f"anchor seq={head['seq']} sha256={head['sha256']}" in out and "rewritten" in out

    # Truncation: the newest rows and their seals removed leave a shorter, valid chain.
    raw(
        "DROP TRIGGER IF EXISTS audit_auditentry_no_delete"
        + (" ON audit_auditentry" if connection.vendor == "postgresql" else "")
    )
    raw(
        "DROP TRIGGER IF EXISTS audit_ledgerseal_no_delete"
        + (" ON audit_ledgerseal" if connection.vendor == "postgresql" else "")
    )
    raw("DELETE FROM audit_auditentry WHERE seq = %s", [rows["entry"].seq])
    raw("DELETE FROM audit_ledgerseal WHERE seq = %s", [last.seq])
    code, out = verify("--anchor", anchor)
    assert code == 1
    assert f"the chain has no seal {head['seq']}: it was truncated" in out


@pytest.mark.django_db
def test_the_head_can_be_read_over_the_api_by_a_read_key_only(client, read_client):
    assert read_client.get("/api/v1/audit/head/").json() == {"seq": 0, "sha256": None}
    small_ledger()
    last = LedgerSeal.objects.order_by("-seq").first()
    assert read_client.get("/api/v1/audit/head/").json() == {"seq": last.seq, "sha256": last.seal_hash}
    assert verify("--anchor", f"{last.seq}:{last.seal_hash}")[0] == 0
    assert client.get("/api/v1/audit/head/").status_code in (401, 403)


def test_a_malformed_anchor_is_refused():
    with pytest.raises(CommandError, match="SEQ:SHA256") as excinfo:
        call_command("audit_verify", "--anchor", "12:not-a-hash")
    assert excinfo.value.returncode == 2


# -- a realistic flow ----------------------------------------------------------------------------------------


def _order(**overrides):
    body = {"symbol": "AAPL", "action": "BUY", "quantity": "10", "order_type": "MKT", "tif": "DAY"}
    return {**body, **overrides}


@pytest.mark.django_db(transaction=True)
def test_a_ledger_written_by_real_trading_verifies_and_a_rewritten_fill_does_not(
    ib_runtime, api_client, admin_client, sim_gateway, orders_enabled
):
    from tests.conftest import wait_for

    def status(order_id):
        return api_client.get(f"/api/v1/orders/{order_id}/").json()["status"]

    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    filled = api_client.post("/api/v1/orders/", _order(client_order_id="seal-mkt"), format="json").json()["id"]
    resting = api_client.post(
        "/api/v1/orders/", _order(client_order_id="seal-lmt", order_type="LMT", limit_price="182.00"), format="json"
    ).json()["id"]
    cancelled = api_client.post(
        "/api/v1/orders/", _order(client_order_id="seal-cxl", order_type="LMT", limit_price="181.00"), format="json"
    ).json()["id"]
    wait_for(lambda: status(filled) == "filled", message="MKT filled")
    wait_for(lambda: Commission.objects.filter(fill__order_id=filled).exists(), message="commission recorded")
    wait_for(lambda: status(cancelled) == "submitted", message="resting")
    assert api_client.post(f"/api/v1/orders/{cancelled}/cancel/").status_code == 200
    wait_for(lambda: status(cancelled) == "cancelled", message="cancelled")
    assert api_client.post("/api/v1/trading/halt/", {"reason": "seal test"}, format="json").status_code == 200
    wait_for(lambda: status(resting) == "cancelled", message="halt cancels the resting order")
    assert admin_client.post("/api/v1/trading/resume/", {}, format="json").status_code == 200

    code, out = verify()
    assert code == 0, out
    rows = sum(m.objects.count() for m in LEDGER)
    assert rows == LedgerSeal.objects.count()
    assert Fill.objects.exists() and TradingSwitchEvent.objects.count() == 2
    assert f"{rows} ledger rows in 6 tables match {rows} seals" in out

    fill = Fill.objects.get(order_id=filled)
    rewrite_around_triggers("orders_fill", fill.pk, "price", "1.00")
    code, out = verify()
    assert code == 1
    assert f"orders_fill pk={fill.pk}: row differs from its seal" in out and 'now "1"' in out
