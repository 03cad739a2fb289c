"""Database triggers that make the ledger tables append-only even for raw SQL.

Every table in `APPEND_ONLY_TABLES` gets triggers `<table>_no_update` and `<table>_no_delete`
(and on PostgreSQL `<table>_no_truncate`, on SQLite `<table>_no_replace`) that abort the statement
with the message `append-only: <table>`:

- SQLite: `BEFORE UPDATE/DELETE ... BEGIN SELECT RAISE(ABORT, ...); END`. (SQLite has no
  TRUNCATE; `DROP TABLE` fires no triggers, so migrations can still remove a table.)
  `INSERT OR REPLACE` deletes the row it conflicts with without firing delete triggers (unless a
  connection turns on `recursive_triggers`), so `<table>_no_replace` refuses, `BEFORE INSERT`, a row
  whose primary key or any unique key is already taken. A plain duplicate insert is refused by the
  same trigger instead of the constraint: an IntegrityError either way.
- PostgreSQL: `BEFORE UPDATE/DELETE` row triggers and a `BEFORE TRUNCATE` statement trigger,
  all calling the shared plpgsql function `ledger_append_only()`.

The migrations create them through `create_triggers()` (see `audit/migrations/0002_*` and
`orders/migrations/0002_*`). **SQLite drops a table's triggers whenever a migration rebuilds
the table** (AlterField, RemoveField, most AddField, constraint changes: Django's
`_remake_table`). Any later migration that changes one of these tables must therefore re-create
them; put `ensure_triggers_operation(<table>, ...)` both first and last in its `operations`
(first so the reverse migration ends with triggers, last so the forward one does):

    from audit.triggers import ensure_triggers_operation

    operations = [
        ensure_triggers_operation("orders_fill"),
        migrations.AlterField(...),
        ensure_triggers_operation("orders_fill"),
    ]

`create_triggers` is idempotent. `missing_triggers(connection)` lists what is absent; the
system check `audit.E001` (`manage.py check --database default`) and
`audit.checks.ledger_triggers_missing()` use it.

Tests that flush the database (`transaction=True`) must lift the triggers for the flush only:
tests/conftest.py does that around `TransactionTestCase._fixture_teardown`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import migrations
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

APPEND_ONLY_TABLES: tuple[str, ...] = (
    "audit_auditentry",
    "audit_ledgerseal",
    "orders_order",
    "orders_orderevent",
    "orders_fill",
    "orders_commission",
    "orders_tradingswitchevent",
)
# operation -> trigger level, per vendor
_OPERATIONS: dict[str, dict[str, str]] = {
    "sqlite": {"update": "ROW", "delete": "ROW", "replace": "ROW"},
    "postgresql": {"update": "ROW", "delete": "ROW", "truncate": "STATEMENT"},
}
PG_FUNCTION = "ledger_append_only"

# The message is concatenated, not formatted: a percent sign would be read as a query parameter.
_PG_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = 'append-only: ' || TG_TABLE_NAME, ERRCODE = 'restrict_violation';
END;
$$
"""


def _operations(vendor: str) -> dict[str, str]:
    try:
        return _OPERATIONS[vendor]
    except KeyError:
        raise NotImplementedError(f"append-only triggers are not implemented for {vendor}") from None


def trigger_names(table: str, vendor: str) -> list[str]:
    """The names of the triggers `table` should have on a database of `vendor` ("sqlite", "postgresql")."""
    return [f"{table}_no_{op}" for op in _operations(vendor)]


def _check_table(table: str) -> None:
    # Names are spliced into DDL, so only the known tables are accepted.
    if table not in APPEND_ONLY_TABLES:
        raise ValueError(f"{table!r} is not an append-only ledger table")


def create_triggers(schema_editor: BaseDatabaseSchemaEditor, table: str) -> None:
    """Create the append-only triggers on `table`. Safe to call twice."""
    _check_table(table)
    vendor = schema_editor.connection.vendor
    operations = _operations(vendor)
    quote = schema_editor.quote_name
    if vendor == "sqlite":
        refuse = f"BEGIN SELECT RAISE(ABORT, 'append-only: {table}'); END"
        for op in operations:
            name = quote(f"{table}_no_{op}")
            if op == "replace":
                # Re-made each time: its condition names the table's keys as they are now.
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
                taken = _sqlite_key_taken(schema_editor, table)
                schema_editor.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON {quote(table)} WHEN {taken} {refuse}")
            else:
                schema_editor.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {op.upper()} ON {quote(table)} {refuse}"
                )
    else:
        schema_editor.execute(_PG_FUNCTION_SQL)
        for op, level in operations.items():
            name = quote(f"{table}_no_{op}")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {quote(table)}")
            schema_editor.execute(
                f"CREATE TRIGGER {name} BEFORE {op.upper()} ON {quote(table)} "
                f"FOR EACH {level} EXECUTE FUNCTION {PG_FUNCTION}()"
            )


def _sqlite_key_taken(schema_editor: BaseDatabaseSchemaEditor, table: str) -> str:
    """A condition on NEW: the row's primary key or one of its unique keys is already in `table`."""
    quote = schema_editor.quote_name
    checks = []
    for key in _sqlite_unique_keys(schema_editor, table):
        same = " AND ".join(f"{quote(column)} = NEW.{quote(column)}" for column in key)
        # Names only: the table is a known ledger table, the columns come from SQLite's catalogue.
        checks.append(f"EXISTS (SELECT 1 FROM {quote(table)} WHERE {same})")  # noqa: S608
    return " OR ".join(checks)


def _sqlite_unique_keys(schema_editor: BaseDatabaseSchemaEditor, table: str) -> list[list[str]]:
    """The columns of `table`'s primary key and of each of its unique constraints (SQLite's catalogue).
    Partial unique indexes are left out: their condition would have to be repeated."""
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"PRAGMA table_info({quote(table)})")  # cid, name, type, notnull, default, pk position
        primary = [row[1] for row in sorted((row for row in cursor.fetchall() if row[5]), key=lambda row: row[5])]
        keys = [primary] if primary else []
        cursor.execute(f"PRAGMA index_list({quote(table)})")  # seq, name, unique, origin, partial
        for _seq, index, unique, _origin, partial in cursor.fetchall():
            if unique and not partial:
                cursor.execute(f"PRAGMA index_info({quote(index)})")  # seqno, cid, column name
                columns = [row[2] for row in cursor.fetchall()]
                if columns not in keys:
                    keys.append(columns)
    return keys


def drop_triggers(schema_editor: BaseDatabaseSchemaEditor, table: str) -> None:
    """Drop the triggers on `table` (the shared PostgreSQL function stays). Safe to call twice."""
    _check_table(table)
    vendor = schema_editor.connection.vendor
    quote = schema_editor.quote_name
    for name in trigger_names(table, vendor):
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {quote(name)} ON {quote(table)}")
        else:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {quote(name)}")


def existing_triggers(connection: BaseDatabaseWrapper) -> set[tuple[str, str]]:
    """(table, trigger name) pairs present in the database."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
        elif connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND pg_table_is_visible(c.oid)"
            )
        else:
            raise NotImplementedError(f"append-only triggers are not implemented for {connection.vendor}")
        return {(table, name) for table, name in cursor.fetchall()}


def missing_triggers(connection: BaseDatabaseWrapper, tables: Iterable[str] = APPEND_ONLY_TABLES) -> list[str]:
    """Names of expected triggers that are absent (or disabled), as "<table>.<trigger>"; empty when all is well."""
    present = existing_triggers(connection)
    return [
        f"{table}.{name}"
        for table in tables
        for name in trigger_names(table, connection.vendor)
        if (table, name) not in present
    ]


def ensure_triggers_operation(*tables: str) -> migrations.RunPython:
    """A migration operation that (re-)creates the triggers of `tables`, forwards and backwards."""
    for table in tables:
        _check_table(table)

    def ensure(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        for table in tables:
            create_triggers(schema_editor, table)

    return migrations.RunPython(ensure, ensure, elidable=False)


def create_triggers_operation(*tables: str) -> migrations.RunPython:
    """The initial operation: create on migrate, drop on reverse."""
    for table in tables:
        _check_table(table)

    def create(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        for table in tables:
            create_triggers(schema_editor, table)

    def drop(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        for table in tables:
            drop_triggers(schema_editor, table)

    return migrations.RunPython(create, drop, elidable=False)
