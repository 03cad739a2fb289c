"""Pytest support for the append-only triggers: let transactional tests clean up.

After a test marked `django_db(transaction=True)` (or using `transactional_db`/`live_server`),
Django empties every table with `DELETE FROM` on SQLite, and the ledger triggers refuse exactly
that. The autouse fixture below drops the SQLite triggers right before that flush and creates
them again before the next database test, so every test runs with the triggers in place.
(PostgreSQL flushes with TRUNCATE, which the row triggers do not block, so it does nothing there.)

Enable it for the whole suite in tests/conftest.py:

    pytest_plugins = [..., "audit.testing"]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from audit.triggers import APPEND_ONLY_TABLES, create_triggers, drop_triggers, missing_triggers

_DB_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences", "django_db_serialized_rollback"}


def _uses_db(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("django_db") is not None or bool(_DB_FIXTURES & set(request.fixturenames))


class _CursorExecutor:
    """Just enough of a schema editor for `audit.triggers`; usable inside a transaction, which
    SQLite's real schema editor refuses (it needs to switch foreign key checks off)."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection

    def quote_name(self, name: str) -> str:
        return self.connection.ops.quote_name(name)

    def execute(self, sql: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(sql)


def ensure_ledger_triggers(using: str = DEFAULT_DB_ALIAS) -> None:
    """Create any missing ledger trigger (idempotent)."""
    connection = connections[using]
    if missing_triggers(connection):
        for table in APPEND_ONLY_TABLES:
            create_triggers(_CursorExecutor(connection), table)  # type: ignore[arg-type]


def drop_ledger_triggers(using: str = DEFAULT_DB_ALIAS) -> None:
    """Drop every ledger trigger (idempotent)."""
    connection = connections[using]
    for table in APPEND_ONLY_TABLES:
        drop_triggers(_CursorExecutor(connection), table)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def ledger_triggers_flushable(request: pytest.FixtureRequest) -> Iterator[None]:
    if not _uses_db(request) or connections[DEFAULT_DB_ALIAS].vendor != "sqlite":
        yield
        return
    # Set up after pytest-django's database fixture, so this is torn down before its flush.
    request.getfixturevalue("_django_db_helper")
    connection = connections[DEFAULT_DB_ALIAS]
    # In a non-transactional test this runs inside the test's transaction and is rolled back with it.
    ensure_ledger_triggers()
    yield
    if not connection.in_atomic_block:
        drop_ledger_triggers()
