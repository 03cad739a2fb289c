"""The one writer of the audit log."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from audit import events
from audit.chain import GENESIS_HASH, compute_hash
from audit.models import AuditEntry
from audit.seal import lock_ledger
from ibkrgw.actors import Actor


def ledger_write_lock() -> None:
    """Take the ledger's write lock now, at the start of a transaction whose reads must not be raced
    by another process's writes (order admission: counts, duplicates, the kill switch)."""
    if not transaction.get_connection().in_atomic_block:
        raise TransactionManagementError("ledger_write_lock must run inside a transaction")
    lock_ledger(transaction.get_connection().alias)


def audit_record(
    *,
    event: str,
    actor: Actor,
    target_type: str = "",
    target_id: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry to the audit log and return it.

    Call it inside the transaction that makes the change it records (`transaction.atomic`), so
    both commit or neither does. Not idempotent: each call appends a new entry.

    Raises ValueError for an event name not registered in `audit.events`, and
    TransactionManagementError when called outside a transaction.
    """
    if not events.is_registered(event):
        raise ValueError(f"unknown audit event {event!r}: register it in audit/events.py")
    if not transaction.get_connection().in_atomic_block:
        raise TransactionManagementError("audit_record must run inside the transaction of the change it records")
    # Writers take turns, so each one reads the true last entry (see audit.seal.lock_ledger).
    lock_ledger(transaction.get_connection().alias)

    # Store exactly what gets hashed: the JSON round trip turns Decimal, UUID and datetimes into strings.
    stored_data = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))
    last = AuditEntry.objects.order_by("-seq").values_list("seq", "entry_hash").first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    entry = AuditEntry(
        seq=seq,
        created_at=timezone.now(),
        event=event,
        actor_kind=str(actor.kind),
        actor_label=actor.label[:150],
        source=str(actor.source),
        correlation_id=actor.correlation_id[:64],
        target_type=target_type[:32],
        target_id=str(target_id)[:64],
        data=stored_data,
        prev_hash=prev_hash,
    )
    entry.entry_hash = compute_hash(entry)
    entry.save()
    return entry
