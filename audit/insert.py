"""One ledger row's INSERT, compiled once per model and connection.

`Model.save()` builds and compiles its INSERT statement on every call, which costs more than the
insert itself; the ledger's writers (the order pipeline, the recorder) insert a dozen rows per
order. This does what `save(force_insert=True)` does for a plain model (one table, no parents,
no expressions among the values): the related-field checks, `pre_save`, each field's `pre_save`
and `get_db_prep_save`, the insert with Django's own SQL (compiled once), the returned primary key
through the backend's converters, the instance's state and `post_save`. Anything else goes to
`Model.save()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, models, transaction
from django.db.models import sql
from django.db.models.signals import post_save, pre_save


@dataclass
class _Statement:
    sql: str
    fields: list[models.Field]
    returning: list[models.Field]
    returning_params: Any
    converters: dict
    compiler: Any  # applies the converters to the returned key


def _fields(meta, pk_set: bool) -> list[models.Field]:
    return [f for f in meta.local_concrete_fields if not f.generated and (pk_set or f is not meta.auto_field)]


def _statement(obj: models.Model, using: str, pk_set: bool) -> _Statement:
    model = type(obj)
    cache = connections[using].__dict__.setdefault("_ledger_inserts", {})
    statement = cache.get((model, pk_set))
    if statement is None:
        meta = model._meta
        fields = _fields(meta, pk_set)
        returning = list(meta.db_returning_fields)
        query = sql.InsertQuery(model)
        query.insert_values(fields, [obj], raw=False)
        compiler = query.get_compiler(using=using)
        compiler.returning_fields = returning
        [(text, _params)] = compiler.as_sql()
        converters = compiler.get_converters([field.get_col(meta.db_table) for field in returning]) if returning else {}
        statement = cache[(model, pk_set)] = _Statement(
            text, fields, returning, compiler.returning_params, converters, compiler
        )
    return statement


def insertable(obj: models.Model) -> bool:
    """Whether `insert_row` can stand in for `save(force_insert=True)` on this row."""
    meta = type(obj)._meta
    return not meta.parents and not meta.proxy and not meta.auto_created and not meta.order_with_respect_to


def insert_row(row: models.Model, using: str) -> None:
    """Insert `row` as a new row, exactly as `row.save(force_insert=True, using=using)` would."""
    obj: Any = row  # Model's private save helpers are not in the type stubs
    model = type(obj)
    meta = model._meta
    connection = connections[using]
    ops: Any = connection.ops
    obj._prepare_related_fields_for_save(operation_name="save")
    pre_save.send(sender=model, instance=obj, raw=False, using=using, update_fields=None)
    with transaction.mark_for_rollback_on_error(using=using):
        if not obj._is_pk_set(meta):
            setattr(obj, meta.pk.attname, meta.pk.get_pk_value_on_save(obj))
        statement = _statement(obj, using, obj._is_pk_set(meta))
        params = []
        for field in statement.fields:
            value = field.pre_save(obj, True)
            if hasattr(value, "resolve_expression"):
                raise TypeError(f"{meta.label}.{field.name}: expressions are not inserted by insert_row")
            params.append(field.get_db_prep_save(value, connection))
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, params)
            if statement.returning:
                rows = [ops.fetch_returned_insert_columns(cursor, statement.returning_params)]
                if statement.converters:
                    rows = list(statement.compiler.apply_converters(rows, statement.converters))
                for value, field in zip(rows[0], statement.returning, strict=True):
                    setattr(obj, field.attname, value)
    obj._state.adding = False
    obj._state.db = using
    post_save.send(sender=model, instance=obj, created=True, update_fields=None, raw=False, using=using)
