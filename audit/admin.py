"""Read-only operator views of the ledger (no add, change or delete, not even for superusers)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ERROR_FLAG, ChangeList
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Model
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from audit.chain import HASHED_FIELDS
from audit.models import AuditEntry, LedgerSeal
from audit.readable import UNREADABLE_ERRORS, Unreadable, readable, unreadable_error
from audit.seal import SEAL_HASHED_FIELDS


def json_block(value: Any) -> str:
    """`value` as indented JSON in a <pre>; format_html escapes it, so stored text can't inject markup."""
    text = json.dumps(value, cls=DjangoJSONEncoder, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def local_time(value: datetime | None) -> str:
    """A time as the console shows it everywhere: date, seconds and zone."""
    return "—" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def plain(value: Decimal | None) -> str:
    """A decimal without padding: 10, 190.5 (never 10.00000000)."""
    return "—" if value is None else f"{value.normalize():f}"


def shown(name: str, description: str | None = None, *, ordering: bool = True):
    """A read-only admin column for a model field as the console shows values: decimals without
    padding, times with seconds and zone. Assign it as a class attribute and list that attribute."""

    def show(self, obj: Model) -> Any:
        value = getattr(obj, name)
        if isinstance(value, Decimal):
            return plain(value)
        if isinstance(value, datetime):
            return local_time(value)
        return "—" if value is None or value == "" else value

    show.short_description = description or name.replace("_", " ")  # type: ignore[attr-defined]
    if ordering:
        show.admin_order_field = name  # type: ignore[attr-defined]
    return show


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        # A spreadsheet must not run stored text as a formula.
        return "'" + value
    return value


CSV_PAGE = 2000  # rows an export reads at a time

# The query-string lookups a declared list filter writes (the field's own name for "All values"
# filters), and those of a date drill-down.
_FILTER_LOOKUPS = ("", "__exact", "__isnull", "__gte", "__lt")
_DATE_LOOKUPS = ("__year", "__month", "__day", "__gte", "__lt")


class DeclaredLookupsOnly(admin.ModelAdmin):
    """A list filters only as its own filters and date drill-down do (`list_filter`, `date_hierarchy`).

    Django's admin lets a query string filter a list by any lookup on any of the model's own fields:
    `?hashed_key__startswith=` would tell, row by row, what a field the page never shows holds, and
    `?actor_label__regex=(` took the page down with a database error. Any other lookup answers 400.
    """

    @cached_property
    def declared_lookups(self) -> frozenset[str]:
        # Read for every lookup of every request; the admin's declarations do not change while it runs.
        names: set[str] = set()
        for item in self.list_filter:
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                names.add(str(item.parameter_name))
                continue
            path = str(item[0] if isinstance(item, list | tuple) else item)
            names.update(path + lookup for lookup in _FILTER_LOOKUPS)
            field = get_fields_from_path(self.model, path)[-1]
            if field.is_relation:
                names.add(f"{path}__{cast(Any, field).target_field.name}__exact")
        if self.date_hierarchy:
            names.update(self.date_hierarchy + lookup for lookup in _DATE_LOOKUPS)
        return frozenset(names)

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        return lookup in self.declared_lookups and super().lookup_allowed(lookup, value, request)


class CsvExportMixin:
    """ "Export CSV" on a list: the rows the list shows (same filters and search), every page, streamed."""

    csv_fields: tuple[str, ...] = ()

    def get_urls(self):
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}_export_csv"
        return [path("export.csv", self.admin_site.admin_view(self.export_csv_view), name=name)] + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        opts = self.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_export_csv", current_app=self.admin_site.name)
        query = request.GET.urlencode()
        extra = {"csv_export_url": f"{url}?{query}" if query else url, **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def csv_value(self, obj: Model, name: str) -> Any:
        return getattr(obj, name)

    def export_csv_view(self, request: HttpRequest) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            # As the list itself answers a filter it cannot apply (`?created_at__gte=garbage`): back to the list
            # (this view's parent URL), with its "invalid filter" flag, instead of a server error.
            return HttpResponseRedirect(f"{request.path.removesuffix('export.csv')}?{ERROR_FLAG}=1")

        def rows() -> Iterator[str]:
            writer = csv.writer(_Echo())
            yield writer.writerow(self.csv_fields)

            def line(obj: Model) -> str:
                return writer.writerow([_csv_cell(self.csv_value(obj, name)) for name in self.csv_fields])

            streamed = queryset.iterator(chunk_size=CSV_PAGE) if not queryset._prefetch_related_lookups else queryset
            start = 0
            try:
                for obj in streamed:
                    text = line(obj)
                    start += 1
                    yield text
                return
            except UNREADABLE_ERRORS:
                pass
            # A row that cannot be read (a value written behind the application's back): from there on a page
            # at a time, each such row named in its place, in the first column, instead of cutting the file short.
            while True:
                page = readable(queryset, line, start=start, stop=start + CSV_PAGE)
                yield from page.rows
                for named in page.named():
                    yield writer.writerow([f"UNREADABLE {named} (run manage.py audit_verify)"])
                if len(page.rows) + len(page.unreadable) < CSV_PAGE:
                    return
                start += CSV_PAGE

        opts = self.model._meta
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{opts.model_name}s-{stamp}.csv"'
        return response


def unreadable_message(row: Unreadable, what: str) -> str:
    return (
        f"Ledger row {row}. It was changed behind the application's back and cannot be read as it was "
        f"sealed, so {what}. Run manage.py audit_verify."
    )


class ReadableChangeList(ChangeList):
    """A list page that shows every row it can read, and names above it each one it cannot (`audit.readable`)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        window = self.result_list.query
        found = readable(self.queryset, start=window.low_mark, stop=window.high_mark)
        self.result_list = found.rows  # iterated like the page's queryset
        for row in found.named():
            messages.error(request, unreadable_message(row, "this list leaves out the row it belongs to"))
        if self.date_hierarchy:
            # The date drill-down reads the earliest and latest date of the list: a date written behind the
            # application's back that cannot be read would take the whole page down with it.
            field = self.date_hierarchy
            try:
                self.queryset.aggregate(first=models.Min(field), last=models.Max(field))
            except UNREADABLE_ERRORS:
                self.date_hierarchy = None
                messages.error(
                    request,
                    f"The date drill-down is off: a row's {field} cannot be read as a date. It was written "
                    "behind the gateway's back: run manage.py audit_verify to see which.",
                )


class AppendOnlyAdmin(DeclaredLookupsOnly):
    """Base for the admin of every append-only model: it can list and show rows, nothing more. A row that
    cannot be read as sealed is named instead of taking the page down."""

    actions = None

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ReadableChangeList

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if isinstance(response, TemplateResponse):
                response.render()  # here, so that a row read while rendering fails here too
        except UNREADABLE_ERRORS as exc:
            error = unreadable_error(self.get_queryset(request).filter(pk=object_id), exc)
            for row in error.details["rows"]:
                shown = Unreadable(row["table"], row["pk"], tuple(row["problems"]))
                messages.error(request, unreadable_message(shown, "this page cannot show it"))
            opts = self.model._meta
            return redirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=self.admin_site.name)
            )
        return response

    def get_fields(self, request: HttpRequest, obj: Model | None = None):
        # Every page is read-only: decimals and times are shown as the lists show them.
        return [self._shown_name(name) for name in super().get_fields(request, obj)]

    def _shown_name(self, name: str) -> str:
        try:
            field = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            return name
        if not isinstance(field, models.DecimalField | models.DateTimeField):
            return name
        attr = f"{name}_shown"
        if not hasattr(type(self), attr):
            setattr(type(self), attr, shown(name, str(field.verbose_name), ordering=False))
        return attr

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(CsvExportMixin, AppendOnlyAdmin):
    list_display = (
        "seq",
        "created",
        "event",
        "block_code",
        "actor_kind",
        "actor_label",
        "source",
        "target_type",
        "target_id",
    )
    csv_fields = (*HASHED_FIELDS, "entry_hash")
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

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: AuditEntry) -> str:
        return local_time(obj.created_at)

    @admin.display(description="block code")
    def block_code(self, obj: AuditEntry) -> str:
        # Why a gate blocked an order, without opening the entry's JSON.
        code = (obj.data or {}).get("code") if isinstance(obj.data, dict) else None
        return format_html('<span class="ibkrgw-status ibkrgw-status-rejected">{}</span>', code) if code else ""


@admin.register(LedgerSeal)
class LedgerSealAdmin(AppendOnlyAdmin):
    list_display = ("seq", "table", "row_pk", "seal_hash")
    list_filter = ("table",)
    search_fields = ("=row_pk", "=seal_hash")
    ordering = ("-seq",)
    fields = (*SEAL_HASHED_FIELDS, "seal_hash", "mac")
    readonly_fields = fields
