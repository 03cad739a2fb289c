"""Reads of the audit log."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditEntry
from ibkrgw.web.listing import within


def audit_list(
    *,
    correlation_id: str | None = None,
    event: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEntry]:
    """Entries matching every given filter, oldest first. `since` is inclusive, `until` exclusive."""
    qs = AuditEntry.objects.all()
    if correlation_id is not None:
        qs = qs.filter(correlation_id=correlation_id)
    if event is not None:
        qs = qs.filter(event=event)
    if target_type is not None:
        qs = qs.filter(target_type=target_type)
    if target_id is not None:
        qs = qs.filter(target_id=target_id)
    return within(qs, "created_at", since=since, until=until).order_by("seq")


def gate_block_counts(*, since: datetime | None = None) -> list[tuple[str, int]]:
    """(code, count) of orders blocked by a gate since `since`, most frequent first."""
    from django.db.models import Count

    from audit import events

    rows = audit_list(event=events.GATE_BLOCKED, since=since).order_by().values("data__code").annotate(n=Count("seq"))
    return sorted(((row["data__code"] or "?", row["n"]) for row in rows), key=lambda r: (-r[1], r[0]))
