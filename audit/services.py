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
from audit.seal import lock_ledger, sealed_at_commit
from ibkrgw.actors import Actor

_LAST_ENTRY_SQL = 'SELECT "seq", "entry_hash" FROM "audit_auditentry" ORDER BY "seq" DESC LIMIT 1'


def ledger_transaction(*, durable: bool = False):
    """A transaction for a busy ledger writer: its rows are sealed together as it ends (`audit.seal`)."""
    return sealed_at_commit(durable=durable)


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
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(_LAST_ENTRY_SQL)  # constant SQL: on every write path, so no query building
        last = cursor.fetchone()
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
