"""API keys' service layer: create and revoke, each with its audit entry in the same transaction.

Shared by `manage.py apikey` and the admin.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def apikey_revocation_seq(prefix: str, using: str = DEFAULT_DB_ALIAS) -> int | None:
    """The seq of the audit entry that revoked the key `prefix`, or None: the audit log is sealed, the key's
    row is not, so a row restored from before its revocation (its MAC and all) is told by this."""
    revoked = AuditEntry.objects.using(using).filter(
        target_id=prefix, target_type="apikey", event=events.APIKEY_REVOKED
    )
    return revoked.values_list("seq", flat=True).first()


def apikey_distrust(key: ScopedAPIKey, revoked_seq: int | None) -> str | None:
    """Why the gateway refuses `key` although its secret may match (its row was changed outside the gateway),
    or None. `revoked_seq`: the audit log's revocation of it (`apikey_revocation_seq`). The one rule that
    authentication, `audit_verify` and the ledger watch apply."""
    if not key.row_intact():
        return (
            "its row does not match its MAC: changed outside the gateway (scope, expiry, revocation, name or "
            "secret hash), or inserted there"
        )
    if key.revoked is not True and revoked_seq is not None:
        return (
            f"revoked in the audit log (seq {revoked_seq}) but not in its row: un-revoked or restored outside "
            "the gateway"
        )
    return None


def unreadable_key_problem(exc: Exception) -> str:
    return f"its row cannot be read ({exc}): written outside the gateway"


def apikey_rows(using: str = DEFAULT_DB_ALIAS) -> Iterator[tuple[str, ScopedAPIKey | Exception]]:
    """Every key, oldest first, read one row at a time: (primary key, the key), or (primary key, why its row
    cannot be read) for a row holding a value the gateway never writes, which must not hide the others."""
    keys = ScopedAPIKey.objects.using(using)
    for pk in keys.order_by("created").values_list("pk", flat=True):
        try:
            yield pk, keys.get(pk=pk)  # every column, as authentication reads it
        except UNREADABLE_ERRORS as exc:
            yield pk, exc


def apikey_problems(using: str = DEFAULT_DB_ALIAS) -> tuple[int, list[str]]:
    """(keys checked, what is wrong with them): rows that cannot be read or are distrusted (`apikey_distrust`).
    For `manage.py audit_verify` and the ledger watch."""
    revoked_in_log = dict(
        AuditEntry.objects.using(using)
        .filter(event=events.APIKEY_REVOKED, target_type="apikey")
        .values_list("target_id", "seq")
    )
    checked, problems = 0, []
    for pk, row in apikey_rows(using):
        checked += 1
        if isinstance(row, Exception):
            problem: str | None = unreadable_key_problem(row)
        else:
            problem = apikey_distrust(row, revoked_in_log.get(row.prefix))
        if problem is not None:
            problems.append(f"API key {prefix_of(pk)}: {problem}; the gateway refuses it")
    return checked, problems
