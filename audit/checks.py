"""System checks of the ledger. `audit.W001`: the seal key is derived from SECRET_KEY on a live gateway.
`audit.E001`: the append-only triggers of the ledger tables are in place, enabled, and as the migrations
wrote them (a same-named trigger that never fires is reported as altered, see `audit.triggers`).

It is a database check, so it only looks at a database when one is named:
`manage.py check --database default` (and `migrate`, which passes its database). While that
database has unapplied migrations the check stays silent, because `migrate` is what creates the
triggers, and it must not be blocked by their absence. With nothing left to apply, a missing
trigger does stop `migrate` too (also a reverse one): write the repairing migration, or pass
`--skip-checks` deliberately. The web server does not run it: a trigger dropped on a running
gateway shows in `manage.py audit_verify` and in this check, nowhere else.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

from audit.triggers import missing_triggers


@register(Tags.security)
def check_ledger_seal_key(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.LEDGER_SEAL_KEY or settings.DEBUG or settings.TRADING_MODE != "live":
        return []
    return [
        Warning(
            "LEDGER_SEAL_KEY is not set: the ledger's seals are keyed with a key derived from SECRET_KEY, so "
            "rotating SECRET_KEY makes every seal written before unverifiable (audit_verify reports them).",
            hint="Set LEDGER_SEAL_KEY to a long random value kept outside the database (openssl rand -hex 32), "
            "with the current SECRET_KEY in LEDGER_SEAL_KEY_FALLBACKS so the seals written so far still verify.",
            id="audit.W001",
        )
    ]


def ledger_triggers_missing(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """The triggers that do not guard their table: "<table>.<trigger>" when missing (all of them before
    `migrate`), with " (disabled)" or " (altered)" after it when present but not as written; empty when all are."""
    return missing_triggers(connections[using])


def _migrations_pending(connection: BaseDatabaseWrapper) -> bool:
    executor = MigrationExecutor(connection)
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


@register(Tags.database, deploy=False)
def check_ledger_triggers(
    app_configs: Any = None, databases: list[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for alias in databases or []:
        if _migrations_pending(connections[alias]):
            continue
        missing = ledger_triggers_missing(alias)
        if missing:
            errors.append(
                Error(
                    f"Append-only triggers are missing, disabled or altered in database {alias!r}: "
                    f"{', '.join(missing)}.",
                    hint="A migration rebuilt a ledger table, or someone dropped, disabled or replaced them (raw "
                    "changes of those tables are then not refused: run manage.py audit_verify). Add a migration "
                    "with audit.triggers.ensure_triggers_operation(<tables>) (see audit/triggers.py) and migrate.",
                    id="audit.E001",
                )
            )
    return errors
