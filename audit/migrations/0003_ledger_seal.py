"""The ledger seal chain (see audit/seal.py): its table, its append-only triggers, and seals for the rows already there."""

from django.db import migrations, models

from audit.triggers import create_triggers_operation

# The ledger tables, in the order existing rows are sealed (each by primary key).
LEDGER_MODELS = (
    ("orders", "Order"),
    ("orders", "OrderEvent"),
    ("orders", "Fill"),
    ("orders", "Commission"),
    ("orders", "TradingSwitchEvent"),
    ("audit", "AuditEntry"),
)
CHUNK = 500


def seal_existing_rows(apps, schema_editor):
    # A database upgraded from before seals existed: vouch for its rows as they are now. Without a MAC:
    # the column comes with 0004, which then vouches for these seals under the seal key.
    from audit.seal import lock_ledger, seal_rows

    using = schema_editor.connection.alias
    lock_ledger(using)
    for app_label, name in LEDGER_MODELS:
        model = apps.get_model(app_label, name)
        pks = list(model._base_manager.using(using).order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(pks), CHUNK):
            seal_rows(model, pks[start : start + CHUNK], using=using, keyed=False)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only_triggers"),
        ("orders", "0002_append_only_triggers"),
    ]

    operations = [
        migrations.CreateModel(
            name="LedgerSeal",
            fields=[
                ("seq", models.BigAutoField(primary_key=True, serialize=False)),
                ("table", models.CharField(max_length=64)),
                ("row_pk", models.CharField(max_length=64)),
                ("content", models.TextField()),
                ("prev_hash", models.CharField(max_length=64)),
                ("seal_hash", models.CharField(max_length=64)),
            ],
            options={
                "verbose_name": "ledger seal",
                "ordering": ["seq"],
                "constraints": [models.UniqueConstraint(fields=("table", "row_pk"), name="ledger_seal_one_per_row")],
            },
        ),
        create_triggers_operation("audit_ledgerseal"),
        migrations.RunPython(seal_existing_rows, migrations.RunPython.noop, elidable=False),
    ]
