"""SQLite: refuse `INSERT OR REPLACE` over a ledger row (the `<table>_no_replace` trigger, see audit/triggers.py)."""

from django.db import migrations

from audit.triggers import ensure_triggers_operation


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0004_ledger_seal_mac"),
    ]

    operations = [
        ensure_triggers_operation("audit_auditentry", "audit_ledgerseal"),
    ]
