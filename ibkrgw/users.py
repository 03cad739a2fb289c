"""People's accounts carry a MAC under the seal key, as API keys do.

Someone who can write the database, without the seal key, could otherwise sign in as anyone: set a
user's password hash to one they computed, raise a user to staff or superuser, add a permission to a
user or to one of their groups, or insert a user. From there the console hands out API keys, resumes
trading and approves held orders. So each user has a `UserMac` row: an HMAC (`audit.seal.seal_keys`,
kept outside the database) over what decides whether and as what they sign in: id, username, password
hash, active, staff and superuser flags, groups, and every permission they hold (their own and their
groups'). Every change the gateway makes writes it again (`connect`: saves, group and permission
changes); a user whose row no longer matches signs in nowhere (`ibkrgw.auth.SealedUserBackend`: the
login form, sessions of the console, the browsable API and websockets), is logged once, and is named by
`audit_verify` and the ledger watch. `last_login` is not covered: signing in writes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS

from audit.chain import canonical_json
from audit.seal import mac_valid, seal_keys, seal_mac
from audit.stored import UNREADABLE_ERRORS

logger = logging.getLogger(__name__)
USER_MAC_FIELDS = ("id", "username", "password", "is_active", "is_staff", "is_superuser")
_distrust_logged: set[Any] = set()


def user_mac_values(user_model: Any, pk: Any, using: str = DEFAULT_DB_ALIAS) -> dict[str, Any] | None:
    """What a user's MAC covers, as the database has it now (None: no such user). `user_model` may be a
    migration's historical model."""
    user = user_model._base_manager.using(using).filter(pk=pk).first()
    if user is None:
        return None
    row = {name: getattr(user, name) for name in USER_MAC_FIELDS}
    groups = list(user.groups.values_list("pk", flat=True))
    own = user.user_permissions.values_list("pk", flat=True)
    via_groups = user.groups.values_list("permissions__pk", flat=True)
    permissions = {permission for permission in [*own, *via_groups] if permission is not None}
    return {**row, "groups": sorted(groups), "permissions": sorted(permissions)}


def user_hash(values: Mapping[str, Any]) -> str:
    """SHA-256 of a user's MAC'd values, tagged so that no other MAC made with the seal key stands for it."""
    payload = {"kind": "user", **{name: values[name] for name in (*USER_MAC_FIELDS, "groups", "permissions")}}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def user_mac(values: Mapping[str, Any]) -> str:
    return seal_mac(user_hash(values), seal_keys()[0])


def user_distrust(pk: Any, using: str = DEFAULT_DB_ALIAS) -> str | None:
    """Why the gateway refuses the user `pk` (their account was changed outside it), or None."""
    from ibkrgw.models import UserMac

    try:
        values = user_mac_values(get_user_model(), pk, using)
        stored = UserMac.objects.using(using).filter(user_id=pk).values_list("mac", flat=True).first()
    except UNREADABLE_ERRORS as exc:
        return f"their row cannot be read ({exc}): written outside the gateway"
    if values is None:
        return None
    if not stored:
        return "no MAC: inserted outside the gateway"
    try:
        intact = mac_valid(user_hash(values), stored, seal_keys())
    except (TypeError, ValueError):
        intact = False
    if not intact:
        return (
            "their account does not match its MAC: changed outside the gateway (password hash, active, staff or "
            "superuser flag, name, groups or permissions)"
        )
    return None


def user_trusted(pk: Any) -> bool:
    """Whether the user `pk` may sign in as the database has them; a refusal is logged once per user."""
    why = user_distrust(pk)
    if why is None:
        return True
    if pk not in _distrust_logged:
        _distrust_logged.add(pk)
        logger.error("user %s refused: %s (run manage.py audit_verify)", pk, why)
    return False


def user_mac_write(pk: Any, using: str = DEFAULT_DB_ALIAS) -> None:
    """Write the user's MAC over what the database has now (after a change the gateway made)."""
    from ibkrgw.models import UserMac

    values = user_mac_values(get_user_model(), pk, using)
    if values is not None:
        UserMac.objects.using(using).update_or_create(user_id=pk, defaults={"mac": user_mac(values)})


def user_problems(using: str = DEFAULT_DB_ALIAS) -> tuple[int, list[str]]:
    """(users checked, what is wrong with them), for `manage.py audit_verify` and the ledger watch."""
    pks = list(get_user_model()._base_manager.using(using).order_by("pk").values_list("pk", flat=True))
    problems = []
    for pk in pks:
        why = user_distrust(pk, using)
        if why is not None:
            problems.append(f"user {pk}: {why}; the gateway refuses to sign them in")
    return len(pks), problems


# -- keeping the MACs current ------------------------------------------------------------------------
RESEALING_REFUSED = (
    "This user's account was changed outside the gateway (it does not match its MAC): deactivate it and create "
    "the account again."
)


def user_resealing_refused(pk: Any, *, active: bool, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether saving the user `pk` must be refused: a save writes a fresh MAC, never over an account changed
    outside the gateway (an admin opening such a user and pressing Save would make it look genuine).
    Deactivating it is the one change allowed. For the model's save and the admin's forms alike."""
    return pk is not None and active and user_distrust(pk, using) is not None


def _last_login_only(update_fields: Any) -> bool:
    """A save of `last_login` alone (signing in): not covered by the MAC, and made after the MAC was checked."""
    return update_fields is not None and set(update_fields) <= {"last_login"}


def _refuse_resealing(sender, instance, raw=False, using=DEFAULT_DB_ALIAS, update_fields=None, **kwargs) -> None:
    if raw or instance._state.adding or _last_login_only(update_fields):
        return
    if user_resealing_refused(instance.pk, active=instance.is_active, using=using or DEFAULT_DB_ALIAS):
        raise ValidationError(RESEALING_REFUSED)


def _mac_after_save(sender, instance, raw=False, using=DEFAULT_DB_ALIAS, update_fields=None, **kwargs) -> None:
    if not _last_login_only(update_fields):
        user_mac_write(instance.pk, using or DEFAULT_DB_ALIAS)


def _affected(instance: Any, model: Any, pk_set: Any, using: str) -> list[Any]:
    """The users whose groups or permissions an m2m change touches (read before it, for a clear)."""
    from django.contrib.auth.models import Group

    user_model = get_user_model()
    users = user_model._base_manager.using(using)
    if isinstance(instance, user_model):
        return [instance.pk]
    if model is user_model:  # a group's or a permission's users
        return sorted(pk_set) if pk_set else list(instance.user_set.values_list("pk", flat=True))
    if isinstance(instance, Group):  # a group's permissions
        return list(users.filter(groups=instance).values_list("pk", flat=True))
    groups = list(pk_set) if pk_set else list(instance.group_set.values_list("pk", flat=True))
    return list(users.filter(groups__in=groups).values_list("pk", flat=True).distinct())  # a permission's groups


def _mac_after_membership(sender, instance, action, reverse, model, pk_set, using=DEFAULT_DB_ALIAS, **kwargs):
    """Groups or permissions changed through the gateway: the MACs of the users they touch follow, for the
    users whose accounts matched their MACs before the change (a changed account is not made to look genuine)."""
    if action in ("pre_add", "pre_remove", "pre_clear"):
        affected = _affected(instance, model, pk_set, using)
        instance._ibkrgw_vouched = [pk for pk in affected if user_distrust(pk, using) is None]
    elif action in ("post_add", "post_remove", "post_clear"):
        for pk in getattr(instance, "_ibkrgw_vouched", []):
            user_mac_write(pk, using)
        instance._ibkrgw_vouched = []


def _before_delete(sender, instance, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    """Deleting a group or a permission takes its memberships with it, without an m2m signal: the MACs of
    the users who held it follow (for those whose accounts matched before)."""
    from django.contrib.auth.models import Group
    from django.db.models import Q

    users = get_user_model()._base_manager.using(using)
    if isinstance(instance, Group):
        holders = users.filter(groups=instance)
    else:
        holders = users.filter(Q(user_permissions=instance) | Q(groups__permissions=instance))
    pks = holders.values_list("pk", flat=True).distinct()
    instance._ibkrgw_vouched = [pk for pk in pks if user_distrust(pk, using) is None]


def _after_delete(sender, instance, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    for pk in getattr(instance, "_ibkrgw_vouched", []):
        user_mac_write(pk, using)


def connect() -> None:
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

    user_model = get_user_model()
    pre_save.connect(_refuse_resealing, sender=user_model, dispatch_uid="ibkrgw.users.refuse")
    post_save.connect(_mac_after_save, sender=user_model, dispatch_uid="ibkrgw.users.mac")
    m2m_changed.connect(_mac_after_membership, sender=user_model.groups.through, dispatch_uid="ibkrgw.users.groups")
    m2m_changed.connect(
        _mac_after_membership, sender=user_model.user_permissions.through, dispatch_uid="ibkrgw.users.perms"
    )
    m2m_changed.connect(_mac_after_membership, sender=Group.permissions.through, dispatch_uid="ibkrgw.users.gperms")
    for model in (Group, Permission):  # their memberships are deleted with them
        pre_delete.connect(_before_delete, sender=model, dispatch_uid=f"ibkrgw.users.delete.{model.__name__}")
        post_delete.connect(_after_delete, sender=model, dispatch_uid=f"ibkrgw.users.deleted.{model.__name__}")
