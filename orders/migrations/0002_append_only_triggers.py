"""Database triggers that refuse UPDATE and DELETE on the order ledger (see audit/triggers.py)."""

from django.db import migrations

from audit.triggers import create_triggers_operation


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0001_initial"),
    ]

    operations = [
        create_triggers_operation(
            "orders_order",
            "orders_orderevent",
            "orders_fill",
            "orders_commission",
            "orders_tradingswitchevent",
        ),
    ]
