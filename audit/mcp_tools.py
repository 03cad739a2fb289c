"""MCP tool for reading the audit log: what happened, by whom, for a call or an order."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audit.api import AuditEntryOutput
from audit.readable import ledger_page
from audit.selectors import audit_list
from ibkrgw.actors import Actor
from ibkrgw.web.fields import StrictDateTimeField, StrictIntegerField
from ibkrgw.web.mcp import bounded_list, list_schema, mcp_tool
from ibkrgw.web.serializers import StrictQueryMixin

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
MAX_OFFSET = 10**9


class AuditInput(StrictQueryMixin, serializers.Serializer):
    correlation_id = serializers.CharField(
        max_length=64,
        required=False,
        help_text="Entries caused by one call: every tool answer carries its id in _meta.correlation_id.",
    )
    order_id = serializers.UUIDField(required=False, help_text="Entries about one order (placed, sent, filled...).")
    event = serializers.CharField(
        max_length=64, required=False, help_text="One event name, e.g. order.sent, gate.blocked, trading.halted."
    )
    since = StrictDateTimeField(required=False, help_text="Only entries at or after this time (UTC).")
    limit = StrictIntegerField(
        required=False,
        default=DEFAULT_LIMIT,
        min_value=1,
        max_value=MAX_LIMIT,
        help_text=f"How many entries (default {DEFAULT_LIMIT}).",
    )
    offset = StrictIntegerField(required=False, default=0, min_value=0, max_value=MAX_OFFSET)


@mcp_tool(
    title="Recent audit entries",
    input=AuditInput,
    output=list_schema(AuditEntryOutput, description="Audit entries, newest first."),
)
def list_audit_entries(query: AuditInput, actor: Actor) -> dict[str, Any]:
    """The append-only audit log, newest first: who did what and when (orders placed, sent, blocked by a
    gate and why, fills, kill switch, connection changes).

    Filter by the correlation_id of one of your calls, by order_id, or by event. Returns `count`,
    `results` and `next_offset`."""
    data = query.validated_data
    filters = {k: data[k] for k in ("correlation_id", "event", "since") if k in data}
    if "order_id" in data:
        filters.update(target_type="order", target_id=str(data["order_id"]))
    entries = audit_list(**filters).order_by("-seq")
    limit, offset = data["limit"], data["offset"]
    # An entry that cannot be read as sealed answers 409 ledger_unreadable naming it, as REST's audit list does.
    render = AuditEntryOutput().to_representation
    rows = ledger_page(entries, render, start=offset, stop=offset + limit)
    return bounded_list(rows, total=entries.count(), offset=offset, limit=limit)


TOOLS = [list_audit_entries]
