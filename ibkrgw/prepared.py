"""Reads that every order and broker event repeats, compiled once per database connection.

Building a Django query (filters, ordering, compiling the SQL) costs several times more than
running it on an indexed key, and the order pipeline and the recorder run the same few reads for
every order. A `PreparedRead` builds its queryset once per connection with sample parameters,
keeps the compiled SQL and compiler, and then runs it with new values: the SQL, the parameter
conversion (`get_db_prep_value`), the result converters and the model instances are Django's own.

    LATEST_EVENT = PreparedRead(
        lambda order_id: OrderEvent.objects.filter(order_id=order_id).order_by("-id")[:1],
        params=[(Order._meta.pk, uuid.UUID(int=1))],
    )
    LATEST_EVENT.first(order.pk)

Each sample must appear exactly once among the compiled parameters (checked when compiling), so
pick samples no other part of the query uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.query import FlatValuesListIterable, ModelIterable, ValuesListIterable


@dataclass
class _Compiled:
    sql: str
    params: list[Any]
    positions: list[int]  # where each parameter goes in `params`
    compiler: Any
    converters: dict  # Django's result converters (decimals, datetimes, JSON), found once
    kind: str  # "model", "values_list" or "flat"
    init_list: list[str]
    model_slice: slice


class PreparedRead:
    def __init__(
        self,
        build: Callable[..., models.QuerySet],
        *,
        params: Sequence[tuple[models.Field, Any]],
    ) -> None:
        self.build = build
        self.fields = [field for field, _ in params]
        self.samples = [sample for _, sample in params]

    def _compiled(self, using: str) -> _Compiled:
        connection = connections[using]
        cache = connection.__dict__.setdefault("_prepared_reads", {})
        compiled = cache.get(self)
        if compiled is None:
            compiled = cache[self] = self._compile(using)
        return compiled

    def _compile(self, using: str) -> _Compiled:
        connection = connections[using]
        queryset = self.build(*self.samples)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()  # also sets up compiler.select / klass_info
        params = list(params)
        positions = []
        for field, sample in zip(self.fields, self.samples, strict=True):
            prepared = field.get_db_prep_value(sample, connection, prepared=False)
            found = [i for i, value in enumerate(params) if value == prepared]
            if len(found) != 1:
                raise RuntimeError(f"prepared read: sample {sample!r} appears {len(found)} times in {params!r}")
            positions.append(found[0])
        iterable = queryset._iterable_class
        init_list: list[str] = []
        model_slice = slice(0)
        if iterable is ModelIterable:
            kind = "model"
            if (
                compiler.annotation_col_map
                or getattr(queryset, "_known_related_objects", None)
                or compiler.klass_info.get("related_klass_infos")
            ):
                raise RuntimeError("prepared read: plain model rows only (no annotations or related objects)")
            fields = compiler.klass_info["select_fields"]
            model_slice = slice(fields[0], fields[-1] + 1)
            init_list = [column[0].target.attname for column in compiler.select[model_slice]]
        elif iterable is FlatValuesListIterable:
            kind = "flat"
        elif iterable is ValuesListIterable:
            kind = "values_list"
        else:
            raise RuntimeError(f"prepared read: {iterable.__name__} is not supported")
        converters = compiler.get_converters([column[0] for column in compiler.select[: compiler.col_count]])
        return _Compiled(sql, params, positions, compiler, converters, kind, init_list, model_slice)

    def all(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> list[Any]:
        """The rows for these parameter values, as the queryset would give them."""
        compiled = self._compiled(using)
        connection = connections[using]
        params = list(compiled.params)
        for position, field, value in zip(compiled.positions, self.fields, values, strict=True):
            params[position] = field.get_db_prep_value(value, connection, prepared=False)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        if not rows:
            return []
        converted = compiled.compiler.apply_converters(rows, compiled.converters) if compiled.converters else rows
        if compiled.kind == "model":
            model = compiled.compiler.klass_info["model"]
            return [model.from_db(using, compiled.init_list, row[compiled.model_slice]) for row in converted]
        if compiled.kind == "flat":
            return [row[0] for row in converted]
        return [tuple(row) for row in converted]

    def first(self, *values: Any, using: str = DEFAULT_DB_ALIAS) -> Any:
        rows = self.all(*values, using=using)
        return rows[0] if rows else None
