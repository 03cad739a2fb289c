"""A user changed in the database, behind the gateway's back, signs in nowhere: not at the login form, not
with a session they already hold; `audit_verify` names them, and the admin does not make them look genuine.
Changes the gateway makes (a password, a group, a permission) keep working."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

pytestmark = pytest.mark.django_db
PASSWORD = "pw-only-for-this-test-1"


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _signs_in(username: str, password: str = PASSWORD) -> bool:
    return Client().login(username=username, password=password)


def _console_opens(client: Client) -> bool:
    return client.get("/admin/dashboard/").status_code == 200


def _verify_problems() -> str:
    with pytest.raises(CommandError) as failed:
        call_command("audit_verify", stdout=StringIO())
    return str(failed.value)


@pytest.fixture
def operator(django_user_model):
    """A staff user who is not a superuser: can read the console, cannot resume trading."""
    return django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)


def test_an_untouched_user_signs_in_and_verifies(operator):
    assert _signs_in("operator")
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "1 users theirs" in out.getvalue()


def test_a_user_raised_to_superuser_in_the_database_is_signed_out_and_named(operator, caplog):
    client = Client()
    assert client.login(username="operator", password=PASSWORD) and _console_opens(client)
    _raw("UPDATE auth_user SET is_superuser = %s WHERE id = %s", [True, operator.pk])
    assert not _console_opens(client)  # the session no longer signs them in
    assert client.post("/api/v1/trading/resume/", {"reason": "x"}, content_type="application/json").status_code in (
        401,
        403,
    )
    assert not _signs_in("operator")
    assert f"user {operator.pk}: their account does not match its MAC" in _verify_problems()
    assert f"user {operator.pk} refused" in caplog.text


def test_a_password_hash_set_in_the_database_does_not_sign_in(operator):
    _raw("UPDATE auth_user SET password = %s WHERE id = %s", [make_password("chosen-by-whoever-1"), operator.pk])
    assert not _signs_in("operator", "chosen-by-whoever-1")
    assert not _signs_in("operator")


def test_a_user_inserted_in_the_database_does_not_sign_in(operator):
    _raw(
        "INSERT INTO auth_user (username, password, is_superuser, is_staff, is_active, first_name, last_name, email,"
        " date_joined) VALUES (%s, %s, %s, %s, %s, '', '', '', CURRENT_TIMESTAMP)",
        ["planted", make_password(PASSWORD), True, True, True],
    )
    assert not _signs_in("planted")
    assert "no MAC: inserted outside the gateway" in _verify_problems()


def test_a_permission_given_in_the_database_is_refused(operator):
    group = Group.objects.create(name="desk")
    operator.groups.add(group)  # through the gateway: the MAC follows
    assert _signs_in("operator")
    permission = Permission.objects.get(codename="change_scopedapikey")
    _raw("INSERT INTO auth_group_permissions (group_id, permission_id) VALUES (%s, %s)", [group.pk, permission.pk])
    assert not _signs_in("operator")


def test_changes_the_gateway_makes_keep_the_user_signing_in(operator, django_user_model):
    group = Group.objects.create(name="desk")
    operator.groups.add(group)
    group.permissions.add(Permission.objects.get(codename="view_scopedapikey"))
    operator.user_permissions.add(Permission.objects.get(codename="view_order"))
    operator.set_password("a-new-password-for-this-test")
    operator.save()
    assert _signs_in("operator", "a-new-password-for-this-test")
    group.user_set.clear()
    assert _signs_in("operator", "a-new-password-for-this-test")
    other = Group.objects.create(name="night desk")
    other.permissions.add(Permission.objects.get(codename="view_fill"))
    operator.groups.add(other)
    other.delete()  # its memberships go with it, without an m2m signal
    assert _signs_in("operator", "a-new-password-for-this-test")
    kind = Permission.objects.get(codename="view_order").content_type
    stale = Permission.objects.create(codename="stale", name="stale", content_type=kind)
    operator.user_permissions.add(stale)
    stale.delete()  # as remove_stale_contenttypes would
    assert _signs_in("operator", "a-new-password-for-this-test")
    call_command("audit_verify", stdout=StringIO())


def test_saving_a_changed_user_is_refused_unless_it_deactivates_them(operator, django_user_model):
    _raw("UPDATE auth_user SET is_superuser = %s WHERE id = %s", [True, operator.pk])
    changed = django_user_model.objects.get(pk=operator.pk)
    changed.first_name = "Ann"
    with pytest.raises(ValidationError):
        changed.save()  # would write a MAC over the raised flag
    assert not _signs_in("operator")
    changed.is_active = False
    changed.save()
    assert not _signs_in("operator")


def test_a_groups_change_does_not_vouch_for_a_member_changed_in_the_database(operator, django_user_model):
    group = Group.objects.create(name="desk")
    operator.groups.add(group)
    _raw("UPDATE auth_user SET is_superuser = %s WHERE id = %s", [True, operator.pk])
    group.permissions.add(Permission.objects.get(codename="view_order"))  # would write the members' MACs again
    assert not _signs_in("operator")


@pytest.fixture
def admin_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "", "pw-not-used-elsewhere-1"))
    return client


def test_the_admin_shows_and_refuses_to_save_a_changed_account(operator, admin_client):
    _raw("UPDATE auth_user SET is_superuser = %s WHERE id = %s", [True, operator.pk])
    listing = admin_client.get("/admin/auth/user/")
    assert listing.status_code == 200 and "MAC ok" in listing.content.decode()
    page = admin_client.get(f"/admin/auth/user/{operator.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update(
        username="operator",
        is_active="on",
        is_staff="on",
        is_superuser="on",
        last_login_0="",
        date_joined_0="2026-01-01",
        date_joined_1="00:00:00",
        groups=[],
        user_permissions=[],
    )
    saved = admin_client.post(f"/admin/auth/user/{operator.pk}/change/", data)
    assert saved.status_code == 200 and "changed outside the gateway" in saved.content.decode()
    password = admin_client.post(
        f"/admin/auth/user/{operator.pk}/password/", {"password1": "Another-pw-1x", "password2": "Another-pw-1x"}
    )
    assert password.status_code == 200 and "changed outside the gateway" in password.content.decode()
    assert not _signs_in("operator") and not _signs_in("operator", "Another-pw-1x")
