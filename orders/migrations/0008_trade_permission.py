"""People trade with the `orders.trade` permission and decide on held orders with `orders.approve`. Staff members
could do both before these existed: those whose account is intact (it matches its MAC) keep doing so after the
upgrade, and their MAC is made again to cover the two. A staff member whose account was changed outside the gateway
is left as it is: still refused everywhere."""

from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations

from audit.seal import mac_valid, seal_keys
from ibkrgw.users import user_hash, user_mac, user_mac_values


def grant_to_staff(apps, schema_editor):
    using = schema_editor.connection.alias
    orders = apps.get_app_config("orders")
    orders.models_module = True  # create_permissions skips an app without models; the historical one has them
    try:
        create_permissions(orders, verbosity=0, using=using, apps=apps)
    finally:
        orders.models_module = None
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    UserMac = apps.get_model("ibkrgw", "UserMac")
    Permission = apps.get_model("auth", "Permission")
    granted = Permission.objects.using(using).filter(
        content_type__app_label="orders", codename__in=["trade", "approve"]
    )
    for user in User._base_manager.using(using).filter(is_staff=True, is_superuser=False):
        stored = UserMac.objects.using(using).filter(user_id=user.pk).values_list("mac", flat=True).first()
        values = user_mac_values(User, user.pk, using)
        if not stored or values is None or not mac_valid(user_hash(values), stored, seal_keys()):
            continue
        user.user_permissions.add(*granted)
        UserMac.objects.using(using).filter(user_id=user.pk).update(mac=user_mac(user_mac_values(User, user.pk, using)))


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("ibkrgw", "0003_usermac"),
        ("orders", "0007_approvals_count_index"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="order",
            options={
                "permissions": [
                    ("trade", "Can place, modify and cancel orders"),
                    ("approve", "Can approve and reject orders waiting for approval"),
                ]
            },
        ),
        migrations.RunPython(grant_to_staff, migrations.RunPython.noop),
    ]
