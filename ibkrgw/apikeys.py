"""API keys' service layer: create and revoke, each with its audit entry in the same transaction.

Shared by `manage.py apikey` and the admin.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from audit import events
from audit.models import AuditEntry
from audit.services import audit_record
from audit.stored import UNREADABLE_ERRORS
from ibkrgw.actors import Actor
from ibkrgw.models import ScopedAPIKey


def apikey_create(*, name: str, scope: str, expires_days: int | None, actor: Actor) -> tuple[ScopedAPIKey, str]:
    """Create a key; returns (row, the secret key). The secret is not stored and cannot be shown again."""
    expiry = timezone.now() + timedelta(days=expires_days) if expires_days else None
    with transaction.atomic(durable=True):
        created, secret = ScopedAPIKey.objects.create_key(name=name, scope=scope, expiry_date=expiry)
        key = cast(ScopedAPIKey, created)  # the library's manager is typed for its abstract model
        apikey_created_record(key, actor)
    return key, secret


def apikey_created_record(key: ScopedAPIKey, actor: Actor) -> None:
    """The audit entry of a new key, inside the transaction that created it."""
    audit_record(
        event=events.APIKEY_CREATED,
        actor=actor,
        target_type="apikey",
        target_id=key.prefix,
        data={"name": key.name, "scope": key.scope, "expiry_date": key.expiry_date},
    )


def apikey_revoke(*, prefix: str, actor: Actor) -> tuple[ScopedAPIKey, bool]:
    """Revoke the key with `prefix`; returns (row, whether it changed). Safe to call twice.

    Raises ScopedAPIKey.DoesNotExist for an unknown prefix.
    """
    with transaction.atomic(durable=True):
        key = ScopedAPIKey.objects.select_for_update().get(prefix=prefix)
        if key.revoked:
            return key, False
        key.revoked = True
        key.save(update_fields=["revoked"])
        apikey_revoked_record(key, actor)
    return key, True


def apikey_revoked_record(key: ScopedAPIKey, actor: Actor) -> None:
    """The audit entry of a revocation, inside the transaction that revoked the key."""
    audit_record(
        event=events.APIKEY_REVOKED,
        actor=actor,
        target_type="apikey",
        target_id=key.prefix,
        data={"name": key.name, "scope": key.scope},
    )


def prefix_of(pk: str) -> str:
    """A key's prefix from its primary key ("<prefix>.<hashed secret>"): how keys are named to people."""
    return pk.partition(".")[0]


def apikey_problems(using: str = DEFAULT_DB_ALIAS) -> tuple[int, list[str]]:
    """(keys checked, what is wrong with them): rows that do not match their MAC, and keys the audit log
    says were revoked whose rows say not. For `manage.py audit_verify` and the ledger watch."""
    revoked_in_log = dict(
        AuditEntry.objects.using(using)
        .filter(event=events.APIKEY_REVOKED, target_type="apikey")
        .values_list("target_id", "seq")
    )
    checked, problems = 0, []
    keys = ScopedAPIKey.objects.using(using)
    for pk in keys.order_by("pk").values_list("pk", flat=True):  # one at a time: a row may not be readable
        checked += 1
        try:
            key = keys.get(pk=pk)  # every column, as authentication reads it
        except UNREADABLE_ERRORS as exc:
            problems.append(
                f"API key {prefix_of(pk)}: its row cannot be read ({exc}): written outside the gateway; "
                "the gateway refuses it"
            )
            continue
        prefix = key.prefix
        if not key.row_intact():
            problems.append(
                f"API key {prefix}: its row does not match its MAC: changed outside the gateway (scope, expiry, "
                "revocation, name or secret hash), or inserted there; the gateway refuses it"
            )
        elif key.revoked is not True and prefix in revoked_in_log:
            problems.append(
                f"API key {prefix}: revoked in the audit log (seq {revoked_in_log[prefix]}) but not in its row: "
                "un-revoked or restored outside the gateway; the gateway refuses it"
            )
    return checked, problems
