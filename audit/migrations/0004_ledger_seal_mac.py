"""Keyed seals (see audit/seal.py): the MAC column, and a ledger sealed before it vouched for under the key."""

from django.db import migrations, models
from django.utils import timezone

from audit.triggers import ensure_triggers_operation


def key_the_ledger(apps, schema_editor):
    """A ledger with seals already: vouch for them under the seal key, as of this upgrade.

    The first keyed seal is the seal of a `ledger.seals_keyed` audit entry: `audit_verify` accepts
    seals without a MAC only before it, so rows forged later with a keyless seal cannot pass for
    rows sealed before the key existed. The running gateway trusts the kill switch only on a keyed
    seal, so its newest row, if any, is then stated again, unchanged, under the key.
    """
    from audit.chain import GENESIS_HASH, compute_hash
    from audit.seal import SEALS_KEYED_EVENT, lock_ledger, seal_rows

    using = schema_editor.connection.alias
    LedgerSeal = apps.get_model("audit", "LedgerSeal")
    AuditEntry = apps.get_model("audit", "AuditEntry")
    Switch = apps.get_model("orders", "TradingSwitchEvent")
    lock_ledger(using)
    head = LedgerSeal.objects.using(using).order_by("-seq").values_list("seq", "seal_hash").first()
    if head is None:
        return  # a new ledger: every seal it gets is keyed
    latest = Switch.objects.using(using).order_by("-id").first()
    data = {"unkeyed_head": {"seq": head[0], "sha256": head[1]}}
    if latest is not None:
        data["kill_switch_restated"] = latest.pk
    last = AuditEntry.objects.using(using).order_by("-seq").values_list("seq", "entry_hash").first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    entry = AuditEntry(
        seq=seq,
        created_at=timezone.now(),
        event=SEALS_KEYED_EVENT,
        actor_kind="system",
        actor_label="migrate",
        source="cli",
        correlation_id="audit.0004_ledger_seal_mac",
        target_type="ledger",
        target_id="",
        data=data,
        prev_hash=prev_hash,
    )
    entry.entry_hash = compute_hash(entry)
    entry.save(using=using, force_insert=True)
    seal_rows(AuditEntry, [entry.seq], using=using)
    if latest is not None:
        copied = {f.attname: getattr(latest, f.attname) for f in Switch._meta.concrete_fields if not f.primary_key}
        restated = Switch.objects.using(using).create(**copied)
        seal_rows(Switch, [restated.pk], using=using)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_ledger_seal"),
        ("orders", "0004_order_account_created_index"),
    ]

    operations = [
        # First and last: a table rebuilt on SQLite loses its triggers (see audit/triggers.py).
        ensure_triggers_operation("audit_ledgerseal"),
        migrations.AddField(
            model_name="ledgerseal",
            name="mac",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        ensure_triggers_operation("audit_ledgerseal"),
        migrations.RunPython(key_the_ledger, migrations.RunPython.noop, elidable=False),
    ]
