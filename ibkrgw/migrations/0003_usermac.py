"""Users get a MAC under the seal key; the users who exist at the upgrade are vouched for as they stand."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from ibkrgw.users import user_mac, user_mac_values


def mac_existing_users(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    UserMac = apps.get_model("ibkrgw", "UserMac")
    using = schema_editor.connection.alias
    for pk in User._base_manager.using(using).values_list("pk", flat=True):
        values = user_mac_values(User, pk, using)
        UserMac.objects.using(using).update_or_create(user_id=pk, defaults={"mac": user_mac(values)})


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("ibkrgw", "0002_scopedapikey_mac"),
    ]

    operations = [
        migrations.CreateModel(
            name="UserMac",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("mac", models.CharField(max_length=64)),
            ],
            options={
                "verbose_name": "user MAC",
            },
        ),
        migrations.RunPython(mac_existing_users, migrations.RunPython.noop),
    ]
