from __future__ import annotations

import pytest
from django.db import connection

from audit.triggers import APPEND_ONLY_TABLES, trigger_names


@pytest.fixture
def ledger_triggers_dropped(db) -> None:
    """Drop every append-only trigger with raw SQL, as someone tampering would.

    It runs inside the test's transaction, so the triggers come back when the test rolls back.
    """
    with connection.cursor() as cursor:
        for table in APPEND_ONLY_TABLES:
            for name in trigger_names(table, connection.vendor):
                on_table = f" ON {table}" if connection.vendor == "postgresql" else ""
                cursor.execute(f"DROP TRIGGER {name}{on_table}")
