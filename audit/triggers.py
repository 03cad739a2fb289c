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

`create_triggers` is idempotent. `trigger_problems(connection)` checks that each trigger is the one
`create_triggers` writes, not merely one of that name: a trigger missing; one disabled (PostgreSQL:
`DISABLE TRIGGER`, or `ENABLE REPLICA TRIGGER`, which leaves it silent in ordinary sessions); one
altered, i.e. present but not as written here (SQLite: its stored SQL, compared with whitespace, the
case of keywords and identifier quoting normalised; PostgreSQL: `pg_get_triggerdef()`, and the
definition of the function it calls, `pg_get_functiondef()`), such as a same-named trigger with
`WHEN 0` or `UPDATE OF <column>`, or a `ledger_append_only()` that returns without raising.
`missing_triggers(connection)` gives them as text, `<table>.<trigger>` for a missing one and
`<table>.<trigger> (disabled)` / `<table>.<trigger> (altered)` for the others; the system check
`audit.E001` (`manage.py check --database default`), `manage.py audit_verify` and `GET health/`
(`ledger.missing_triggers`) use it. It costs two queries on SQLite and one on PostgreSQL.

Tests that flush the database (`transaction=True`) must lift the triggers for the flush only:
tests/conftest.py does that around `TransactionTestCase._fixture_teardown`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
    connection = schema_editor.connection
    vendor = connection.vendor
    operations = _operations(vendor)
    quote = schema_editor.quote_name
    if vendor == "sqlite":
        for op in operations:
            name = f"{table}_no_{op}"
            if op == "replace":
                # Re-made each time: its condition names the table's keys as they are now.
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {quote(name)}")
                keys = _sqlite_unique_keys(connection, [table])[table]
                schema_editor.execute(_trigger_sql(vendor, quote, table, op, keys))
            else:
                schema_editor.execute(_trigger_sql(vendor, quote, table, op, if_not_exists=True))
    else:
        schema_editor.execute(_PG_FUNCTION_SQL)
        for op in operations:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {quote(f'{table}_no_{op}')} ON {quote(table)}")
            schema_editor.execute(_trigger_sql(vendor, quote, table, op))


def _trigger_sql(
    vendor: str,
    quote: Callable[[str], str],
    table: str,
    op: str,
    keys: Sequence[Sequence[str]] = (),
    *,
    if_not_exists: bool = False,
) -> str:
    """The `CREATE TRIGGER` statement of `table`'s trigger for `op`: what is executed, and what the database
    must still hold (`keys`: the table's unique keys, for SQLite's `no_replace`)."""
    name = quote(f"{table}_no_{op}")
    if vendor == "sqlite":
        create = "CREATE TRIGGER IF NOT EXISTS" if if_not_exists else "CREATE TRIGGER"
        refuse = f"BEGIN SELECT RAISE(ABORT, 'append-only: {table}'); END"
        if op == "replace":
            taken = _sqlite_key_taken(quote, table, keys)
            return f"{create} {name} BEFORE INSERT ON {quote(table)} WHEN {taken} {refuse}"
        return f"{create} {name} BEFORE {op.upper()} ON {quote(table)} {refuse}"
    level = _operations(vendor)[op]
    return (
        f"CREATE TRIGGER {name} BEFORE {op.upper()} ON {quote(table)} FOR EACH {level} EXECUTE FUNCTION {PG_FUNCTION}()"
    )


def _sqlite_key_taken(quote: Callable[[str], str], table: str, keys: Sequence[Sequence[str]]) -> str:
    """A condition on NEW: the row's primary key or one of its unique keys is already in `table`."""
    checks = []
    for key in keys:
        same = " AND ".join(f"{quote(column)} = NEW.{quote(column)}" for column in key)
        # Names only: the table is a known ledger table, the columns come from SQLite's catalogue.
        checks.append(f"EXISTS (SELECT 1 FROM {quote(table)} WHERE {same})")  # noqa: S608
    return " OR ".join(checks)


def _sqlite_unique_keys(connection: BaseDatabaseWrapper, tables: Sequence[str]) -> dict[str, list[list[str]]]:
    """Per table, the columns of its primary key and of each of its unique constraints (SQLite's catalogue),
    in the order PRAGMA table_info / index_list / index_info give them, in one query for all `tables`.
    Partial unique indexes are left out: their condition would have to be repeated."""
    names = ", ".join(["%s"] * len(tables))
    # kind 0: the primary key's columns by position; kind 1: each unique index's columns, index by index.
    sql = f"""
        SELECT m.name, 0, 0, p.pk, p.name FROM sqlite_master m, pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name IN ({names}) AND p.pk > 0
        UNION ALL
        SELECT m.name, 1, l.seq, i.seqno, i.name
          FROM sqlite_master m, pragma_index_list(m.name) l, pragma_index_info(l.name) i
         WHERE m.type = 'table' AND m.name IN ({names}) AND l."unique" AND NOT l.partial
        ORDER BY 1, 2, 3, 4
    """  # noqa: S608 (placeholders only)
    columns: dict[tuple[str, int, int], list[str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [*tables, *tables])
        for table, kind, index, _position, column in cursor.fetchall():
            columns.setdefault((table, kind, index), []).append(column)
    keys: dict[str, list[list[str]]] = {table: [] for table in tables}
    for (table, _kind, _index), key in columns.items():  # in ORDER BY order: the primary key first
        if key not in keys[table]:
            keys[table].append(key)
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


MISSING, DISABLED, ALTERED = "missing", "disabled", "altered"
_INTACT = "intact"


@dataclass(frozen=True, slots=True)
class TriggerProblem:
    """An expected trigger that does not guard its table as written: `state` is MISSING, DISABLED or ALTERED."""

    table: str
    name: str
    state: str

    def __str__(self) -> str:
        where = f"{self.table}.{self.name}"
        return where if self.state == MISSING else f"{where} ({self.state})"


def trigger_problems(
    connection: BaseDatabaseWrapper, tables: Iterable[str] = APPEND_ONLY_TABLES
) -> list[TriggerProblem]:
    """Each expected trigger that is missing, disabled, or not the trigger `create_triggers` writes."""
    tables = list(tables)
    vendor = connection.vendor
    expected = {(table, f"{table}_no_{op}"): op for table in tables for op in _operations(vendor)}
    if not expected:
        return []
    if vendor == "sqlite":
        found = _sqlite_states(connection, expected)
    else:
        found = _postgresql_states(connection, tables, expected)
    return [
        TriggerProblem(table, name, state)
        for (table, name) in expected
        if (state := found.get((table, name), MISSING)) != _INTACT
    ]


def missing_triggers(connection: BaseDatabaseWrapper, tables: Iterable[str] = APPEND_ONLY_TABLES) -> list[str]:
    """The expected triggers that do not guard their table, as "<table>.<trigger>" when absent and
    "<table>.<trigger> (disabled)" / "<table>.<trigger> (altered)" otherwise; empty when all is well."""
    return [str(problem) for problem in trigger_problems(connection, tables)]


def _sqlite_states(connection: BaseDatabaseWrapper, expected: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger'")
        # SQLite's names are case-insensitive; the stored SQL is the CREATE TRIGGER as it was written.
        stored = {(table.lower(), name.lower()): sql or "" for table, name, sql in cursor.fetchall()}
    present = [pair for pair in expected if pair in stored]
    replace_on = [table for table, name in present if expected[table, name] == "replace"]
    keys = _sqlite_unique_keys(connection, replace_on) if replace_on else {}
    quote = connection.ops.quote_name
    states = {}
    for table, name in present:
        should = _trigger_sql("sqlite", quote, table, expected[table, name], keys.get(table, ()))
        states[table, name] = _INTACT if _normalised(stored[table, name]) == _normalised(should) else ALTERED
    return states


def _postgresql_states(
    connection: BaseDatabaseWrapper, tables: list[str], expected: dict[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid), tn.nspname, "
            "pg_get_functiondef(t.tgfoid), fn.nspname "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace tn ON tn.oid = c.relnamespace "
            "JOIN pg_proc f ON f.oid = t.tgfoid JOIN pg_namespace fn ON fn.oid = f.pronamespace "
            "WHERE NOT t.tgisinternal AND pg_table_is_visible(c.oid) AND c.relname = ANY(%s)",
            [tables],
        )
        rows = cursor.fetchall()
    quote = connection.ops.quote_name
    function = _normalised(_PG_FUNCTION_SQL)
    states = {}
    for table, name, enabled, definition, table_schema, function_definition, function_schema in rows:
        if (table, name) not in expected:
            continue
        if enabled not in ("O", "A"):  # D: disabled; R: fires only under session_replication_role = replica
            states[table, name] = DISABLED
            continue
        # The catalogue names the table with its schema, and the function with its own when it is not on the
        # search path: the trigger is known to be on this table, and the function is checked by its oid.
        should = _normalised(_trigger_sql("postgresql", quote, table, expected[table, name]))
        same = _normalised(definition, frozenset({table_schema.lower(), function_schema.lower()})) == should
        same = same and _normalised(function_definition, frozenset({function_schema.lower()})) == function
        states[table, name] = _INTACT if same else ALTERED
    return states


_TOKEN = re.compile(
    r"""
      (?P<string>'(?:[^']|'')*')                 # a string literal: kept as it is
    | (?P<dollar>\$(?:[^\W\d]\w*)?\$)             # a dollar quote ($$, $function$): all the same
    | (?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])  # a quoted identifier: unquoted
    | (?P<word>[^\W\d][\w$]*|\d+(?:\.\d*)?)         # a keyword, identifier or number: lower case
    | (?P<operator>[-+*/<>=~!@#%^&|?]+)          # an operator, kept whole (|| is not | |, -- not - -)
    | (?P<other>\S)                              # punctuation
    """,
    re.VERBOSE,
)


@functools.lru_cache(maxsize=256)
def _normalised(sql: str, schemas: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """`sql` as tokens, the same however it is spaced, cased or quoted; `<schema>.` dropped for `schemas`."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(sql):
        kind, text = match.lastgroup, match.group()
        if kind == "quoted":
            closing = "]" if text[0] == "[" else text[0]
            text = text[1:-1].replace(closing * 2, closing).lower()
        elif kind == "dollar":
            text = "$$"
        elif kind != "string":
            text = text.lower()
        tokens.append(text)
    kept: list[str] = []
    index = 0
    while index < len(tokens):
        if tokens[index] in schemas and tokens[index + 1 : index + 2] == ["."]:
            index += 2
            continue
        kept.append(tokens[index])
        index += 1
    return tuple(kept)


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
