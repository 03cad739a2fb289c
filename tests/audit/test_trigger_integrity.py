"""A trigger with the right name that no longer guards its table is reported, not only a missing one.

Someone with the database can leave every trigger name in place and still open the ledger: re-create a
trigger with a condition that is never true, limit it to one column, disable it (or enable it for replication
sessions only), or on PostgreSQL rewrite the function it calls so it returns without raising. Each is
reported as `<table>.<trigger> (altered)` or `(disabled)` by health, `audit_verify` and the system check.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from audit.checks import check_ledger_triggers
from audit.triggers import APPEND_ONLY_TABLES, missing_triggers, trigger_names
from tests.audit.test_ledger_seal import raw, verify
from tests.factories import FillFactory

pytestmark = pytest.mark.django_db


def sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's triggers")


def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's triggers")


def replace_trigger(table: str, name: str, create: str) -> None:
    """Drop the trigger `name` and create `create` in its place, with raw SQL, as someone tampering would."""
    on_table = f" ON {table}" if connection.vendor == "postgresql" else ""
    raw(f"DROP TRIGGER {name}{on_table}")
    raw(create)


@pytest.fixture
def fresh_health():
    from brokers.selectors import health_probe_forget

    health_probe_forget()
    yield health_probe_forget
    health_probe_forget()


def assert_reported_everywhere(expected: list[str], anonymous, client, fresh_health) -> None:
    """`expected` are what `missing_triggers` names; health, the system check and audit_verify say so too."""
    assert missing_triggers(connection) == expected
    fresh_health()  # health's probe is shared for a second: ask again now
    assert client.get("/api/v1/health/").json()["ledger"] == {
        "guarded": False,
        "missing_triggers": expected,
        "watch": None,
    }
    assert anonymous.get("/api/v1/health/").json()["ledger"] == {"guarded": False, "watch": None}
    [error] = check_ledger_triggers(databases=["default"])
    assert error.id == "audit.E001"
    assert f"{', '.join(expected)}." in error.msg
    with pytest.raises(SystemCheckError, match="audit.E001"):
        call_command("check", "--database", "default")
    code, out = verify()
    assert code == 1
    names = ", ".join(expected)
    assert f"trigger(s) missing, disabled or altered, raw changes of those tables are not refused: {names}" in out


def test_a_freshly_migrated_database_is_guarded_everywhere(client, read_client_in_test_transaction, fresh_health):
    FillFactory()
    assert missing_triggers(connection) == []
    assert read_client_in_test_transaction.get("/api/v1/health/").json()["ledger"] == {
        "guarded": True,
        "missing_triggers": [],
        "watch": None,
    }
    assert check_ledger_triggers(databases=["default"]) == []
    call_command("check", "--database", "default")
    code, out = verify()
    assert code == 0, out


def test_triggers_made_again_with_the_same_meaning_are_not_reported():
    """The comparison is on meaning, not on spelling: spacing, case, quoting, a schema-qualified name."""
    if connection.vendor == "sqlite":
        replace_trigger(
            "orders_fill",
            "orders_fill_no_update",
            "create trigger [orders_fill_no_update]\n  before update on `orders_fill`\n"
            "  begin select raise(abort,'append-only: orders_fill') ;\nend",
        )
        replace_trigger(
            "orders_fill",
            "orders_fill_no_replace",
            "CREATE TRIGGER orders_fill_no_replace BEFORE INSERT ON orders_fill WHEN EXISTS (SELECT 1 FROM orders_fill "
            "WHERE id = NEW.id) OR EXISTS (SELECT 1 FROM orders_fill WHERE exec_id = NEW.exec_id) "
            "BEGIN SELECT RAISE(ABORT, 'append-only: orders_fill'); END",
        )
    else:
        replace_trigger(
            "orders_fill",
            "orders_fill_no_update",
            'create trigger "orders_fill_no_update" before update on public."orders_fill"\n'
            "  for each row execute procedure public.ledger_append_only()",
        )
        raw(
            "CREATE OR REPLACE FUNCTION public.ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
            "begin\n  raise exception using message = 'append-only: ' || tg_table_name, errcode = 'restrict_violation';"
            "\nend;\n$body$"
        )
    assert missing_triggers(connection) == []
    fill = FillFactory()
    with pytest.raises(Exception, match="append-only: orders_fill"):
        raw("UPDATE orders_fill SET price = 1 WHERE id = %s", [fill.pk])


def test_same_named_triggers_that_never_fire_are_reported_as_altered(
    client, read_client_in_test_transaction, fresh_health
):
    fill = FillFactory()
    if connection.vendor == "sqlite":
        for op in ("UPDATE", "DELETE"):
            name = f"orders_fill_no_{op.lower()}"
            never = f"CREATE TRIGGER {name} BEFORE {op} ON orders_fill WHEN 0 BEGIN SELECT RAISE(ABORT, 'x'); END"
            replace_trigger("orders_fill", name, never)
    else:
        for op in ("UPDATE", "DELETE"):
            name = f"orders_fill_no_{op.lower()}"
            replace_trigger(
                "orders_fill",
                name,
                f"CREATE TRIGGER {name} BEFORE {op} ON orders_fill FOR EACH ROW WHEN (false) "
                "EXECUTE FUNCTION ledger_append_only()",
            )
    raw("UPDATE orders_fill SET price = 1 WHERE id = %s", [fill.pk])  # the door is open

    expected = ["orders_fill.orders_fill_no_update (altered)", "orders_fill.orders_fill_no_delete (altered)"]
    assert_reported_everywhere(expected, client, read_client_in_test_transaction, fresh_health)
    code, out = verify()
    assert f"orders_fill pk={fill.pk}: row differs from its seal" in out  # and what came through it


def test_a_replace_guard_that_no_longer_covers_every_unique_key_is_reported_on_sqlite():
    sqlite_only()
    # Only the primary key is checked: INSERT OR REPLACE over another fill's exec_id deletes that fill.
    replace_trigger(
        "orders_fill",
        "orders_fill_no_replace",
        'CREATE TRIGGER "orders_fill_no_replace" BEFORE INSERT ON "orders_fill" WHEN EXISTS (SELECT 1 FROM '
        '"orders_fill" WHERE "id" = NEW."id") BEGIN SELECT RAISE(ABORT, \'append-only: orders_fill\'); END',
    )
    fill = FillFactory()
    columns = ", ".join(c for c, *_ in raw("SELECT name FROM pragma_table_info('orders_fill') WHERE name <> 'id'"))
    raw(f"INSERT OR REPLACE INTO orders_fill ({columns}) SELECT {columns} FROM orders_fill WHERE id = %s", [fill.pk])  # noqa: S608
    assert raw("SELECT id FROM orders_fill") != [(fill.pk,)]
    assert missing_triggers(connection) == ["orders_fill.orders_fill_no_replace (altered)"]


@pytest.mark.parametrize(
    "create",
    [
        "CREATE TRIGGER orders_fill_no_update BEFORE UPDATE ON orders_fill FOR EACH ROW "
        "WHEN (OLD.price IS NULL) EXECUTE FUNCTION ledger_append_only()",
        "CREATE TRIGGER orders_fill_no_update BEFORE UPDATE OF order_ref ON orders_fill FOR EACH ROW "
        "EXECUTE FUNCTION ledger_append_only()",
        "CREATE TRIGGER orders_fill_no_update BEFORE INSERT ON orders_fill FOR EACH ROW "
        "EXECUTE FUNCTION ledger_append_only()",
    ],
    ids=["when", "update-of-column", "other-event"],
)
def test_a_postgresql_trigger_changed_to_miss_updates_is_reported_as_altered(create):
    postgresql_only()
    fill = FillFactory()
    replace_trigger("orders_fill", "orders_fill_no_update", create)
    raw("UPDATE orders_fill SET price = 1 WHERE id = %s", [fill.pk])
    assert missing_triggers(connection) == ["orders_fill.orders_fill_no_update (altered)"]


def test_a_postgresql_trigger_calling_a_same_named_function_elsewhere_is_reported_as_altered():
    postgresql_only()
    fill = FillFactory()
    raw("CREATE SCHEMA elsewhere")
    raw(
        "CREATE FUNCTION elsewhere.ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RETURN NEW; END; $$"
    )
    replace_trigger(
        "orders_fill",
        "orders_fill_no_update",
        "CREATE TRIGGER orders_fill_no_update BEFORE UPDATE ON orders_fill FOR EACH ROW "
        "EXECUTE FUNCTION elsewhere.ledger_append_only()",
    )
    raw("UPDATE orders_fill SET price = 1 WHERE id = %s", [fill.pk])
    assert missing_triggers(connection) == ["orders_fill.orders_fill_no_update (altered)"]


def test_a_rewritten_postgresql_trigger_function_is_reported_for_every_trigger(
    client, read_client_in_test_transaction, fresh_health
):
    postgresql_only()
    fill = FillFactory()
    raw(
        "CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n    RETURN NEW;\nEND;\n$$"
    )
    raw("UPDATE orders_fill SET price = 1 WHERE id = %s", [fill.pk])  # the door is open

    expected = [
        f"{table}.{name} (altered)" for table in APPEND_ONLY_TABLES for name in trigger_names(table, "postgresql")
    ]
    assert_reported_everywhere(expected, client, read_client_in_test_transaction, fresh_health)


def test_a_postgresql_trigger_disabled_or_left_to_replication_sessions_is_reported_as_disabled(
    client, read_client_in_test_transaction, fresh_health
):
    postgresql_only()
    raw("ALTER TABLE orders_fill ENABLE REPLICA TRIGGER orders_fill_no_update")  # silent in ordinary sessions
    raw("ALTER TABLE orders_fill DISABLE TRIGGER orders_fill_no_delete")
    fill = FillFactory()  # after the ALTERs: PostgreSQL refuses them while its foreign keys' checks are pending
    raw("UPDATE orders_fill SET price = %s WHERE id = %s", [Decimal("1"), fill.pk])  # the door is open

    expected = ["orders_fill.orders_fill_no_update (disabled)", "orders_fill.orders_fill_no_delete (disabled)"]
    assert_reported_everywhere(expected, client, read_client_in_test_transaction, fresh_health)
