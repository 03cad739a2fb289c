"""The audit log: one append-only, hash-chained row per action (see `audit.chain`).

Write entries only through `audit.services.audit_record`; it assigns `seq` and the hashes.
"""

from __future__ import annotations

from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from audit.ledger import AppendOnlyModel


class AuditEntry(AppendOnlyModel):
    seq = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    event = models.CharField(max_length=64)
    actor_kind = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=150)
    source = models.CharField(max_length=16)
    correlation_id = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True, db_index=True)
    data = models.JSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["event"], name="audit_entry_event_idx"),
            models.Index(fields=["created_at"], name="audit_entry_created_at_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # An entry without its hashes would silently break the chain for everyone after it.
        if self._state.adding and (not self.entry_hash or not self.prev_hash or self.seq is None):
            raise ValueError("AuditEntry rows are written by audit.services.audit_record only")
        super().save(*args, **kwargs)


class LedgerSeal(AppendOnlyModel):
    """One ledger row's content at insert, hash-chained (see `audit.seal`). Written by the ledger base class only."""

    ledger_sealed = False  # the seals are the chain itself

    seq = models.BigAutoField(primary_key=True)
    table = models.CharField(max_length=64)
    row_pk = models.CharField(max_length=64)
    content = models.TextField()
    prev_hash = models.CharField(max_length=64)
    seal_hash = models.CharField(max_length=64)
    # HMAC-SHA256 of seal_hash under the seal key; NULL on seals written before the key existed.
    mac = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        verbose_name = "ledger seal"
        constraints = [models.UniqueConstraint(fields=["table", "row_pk"], name="ledger_seal_one_per_row")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.table} {self.row_pk}"
