"""SQLite: refuse `INSERT OR REPLACE` over a ledger row (the `<table>_no_replace` trigger, see audit/triggers.py)."""

from django.db import migrations

from audit.triggers import ensure_triggers_operation


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_halt_sweep"),
    ]

    operations = [
        ensure_triggers_operation(
            "orders_order",
            "orders_orderevent",
            "orders_fill",
            "orders_commission",
            "orders_tradingswitchevent",
        ),
    ]
