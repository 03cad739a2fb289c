"""Database triggers that refuse UPDATE and DELETE on the audit log (see audit/triggers.py)."""

from django.db import migrations

from audit.triggers import create_triggers_operation


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        create_triggers_operation("audit_auditentry"),
    ]
