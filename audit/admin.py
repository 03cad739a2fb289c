"""Read-only operator views of the ledger (no add, change or delete, not even for superusers)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model
from django.http import HttpRequest
from django.utils.html import format_html

from audit.chain import HASHED_FIELDS
from audit.models import AuditEntry, LedgerSeal
from audit.seal import SEAL_HASHED_FIELDS


def json_block(value: Any) -> str:
    """`value` as indented JSON in a <pre>; format_html escapes it, so stored text can't inject markup."""
    text = json.dumps(value, cls=DjangoJSONEncoder, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


class AppendOnlyAdmin(admin.ModelAdmin):
    """Base for the admin of every append-only model: it can list and show rows, nothing more."""

    actions = None

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(AppendOnlyAdmin):
    list_display = (
        "seq",
        "created_at",
        "event",
        "actor_kind",
        "actor_label",
        "source",
        "target_type",
        "target_id",
        "correlation_id",
    )
    list_filter = ("event", "actor_kind", "source", "target_type", "created_at")
    search_fields = ("=correlation_id", "=target_id", "actor_label", "event")
    date_hierarchy = "created_at"
    ordering = ("-seq",)
    # Every hashed field (data shown escaped) and the hash itself, in the chain's order.
    fields = (*("data_pretty" if name == "data" else name for name in HASHED_FIELDS), "entry_hash")
    readonly_fields = fields

    @admin.display(description="data")
    def data_pretty(self, obj: AuditEntry) -> str:
        return json_block(obj.data)


@admin.register(LedgerSeal)
class LedgerSealAdmin(AppendOnlyAdmin):
    list_display = ("seq", "table", "row_pk", "seal_hash")
    list_filter = ("table",)
    search_fields = ("=row_pk", "=seal_hash")
    ordering = ("-seq",)
    fields = (*SEAL_HASHED_FIELDS, "seal_hash")
    readonly_fields = fields
