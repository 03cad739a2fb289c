"""Lists: one time window (`since` inclusive, `until` exclusive) and one paging (`limit`/`offset`).

REST pages with DRF's `LimitOffsetPagination`; MCP tools return the same page shape from `page()`.
Selectors apply the window with `within()`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.db.models import QuerySet
from rest_framework import serializers

from ibkrgw.web.fields import StrictDateTimeField, StrictIntegerField
from ibkrgw.web.serializers import FieldsOncePerThread, StrictQueryMixin

PAGING = ("limit", "offset")
WINDOW_AND_PAGING = ("since", "until", *PAGING)


class ListQuery(FieldsOncePerThread, StrictQueryMixin, serializers.Serializer):
    """Query parameters of a list: a subclass declares its own filters; the window and paging come last.
    Flat, so its fields are built once per thread (every list request validates one)."""

    since = StrictDateTimeField(required=False)
    until = StrictDateTimeField(required=False)
    limit = StrictIntegerField(required=False, min_value=1, max_value=1000)
    offset = StrictIntegerField(required=False, min_value=0)

    def get_fields(self):
        fields = super().get_fields()
        for name in WINDOW_AND_PAGING:  # after the subclass's filters, in parameter lists and error details
            fields[name] = fields.pop(name)
        return fields

    def filters(self) -> dict[str, Any]:
        """The validated filters (time window included) for a selector, without the paging."""
        return {k: v for k, v in self.validated_data.items() if k not in PAGING}


def within(queryset: QuerySet, field: str, *, since: datetime | None, until: datetime | None) -> QuerySet:
    """Rows whose `field` is in [since, until); a missing bound does not limit."""
    if since is not None:
        queryset = queryset.filter(**{f"{field}__gte": since})
    if until is not None:
        queryset = queryset.filter(**{f"{field}__lt": until})
    return queryset


def page(queryset: QuerySet, query: ListQuery, output: type[serializers.Serializer]) -> dict[str, Any]:
    """REST's LimitOffsetPagination shape; `next`/`previous` are REST URLs there, null here: page with limit/offset."""
    limit: int = query.validated_data.get("limit") or cast(int, settings.REST_FRAMEWORK["PAGE_SIZE"])
    offset: int = query.validated_data.get("offset") or 0
    return {
        "count": queryset.count(),
        "next": None,
        "previous": None,
        "results": output(queryset[offset : offset + limit], many=True).data,
    }
