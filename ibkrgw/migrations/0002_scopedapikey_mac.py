"""API keys get a MAC under the seal key; the keys that exist at the upgrade are vouched for as they stand."""

from django.db import migrations, models

from ibkrgw.models import APIKEY_MAC_FIELDS, apikey_mac


def mac_existing_keys(apps, schema_editor):
    ScopedAPIKey = apps.get_model("ibkrgw", "ScopedAPIKey")
    using = schema_editor.connection.alias
    for values in ScopedAPIKey.objects.using(using).values(*APIKEY_MAC_FIELDS):
        ScopedAPIKey.objects.using(using).filter(pk=values["id"]).update(mac=apikey_mac(values))


class Migration(migrations.Migration):
    dependencies = [
        ("ibkrgw", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="scopedapikey",
            name="mac",
            field=models.CharField(
                blank=True,
                default="",
                editable=False,
                help_text="HMAC under the seal key of the fields that decide what the key may do; written by every save",
                max_length=64,
            ),
        ),
        migrations.RunPython(mac_existing_keys, migrations.RunPython.noop),
    ]
