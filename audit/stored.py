"""Ledger rows read as the database stores them, so that no stored value can stop a verification.

`audit_verify` and the running gateway's watch compare each row's canonical content (`content_of`:
what Django reads back) with its seal. Read through the ORM, one value Django cannot convert (text
written into a number or date column behind the application's back) would raise, and the whole
verification would stop without naming anything. Here each value is converted on its own: one that
cannot be read is reported against its row, and the rest of the ledger is still checked.

On SQLite a second kind of edit needs a check of its own. UUIDs, dates and datetimes are stored as
text there, and every query compares that text. The same value written another way (`3ADF…` for
`3adf…`, a datetime with an offset) reads back as the same content, so the seal still matches, but
the lookups, joins and time windows the gateway runs no longer find it as before: an order loses its
events, a rate-limit window miscounts. Such a value is reported as stored in a form the gateway
never writes. (PostgreSQL stores these types natively: one value has one stored form.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import connections, models

from audit.seal import content_of, pk_text

# What a converter or a renderer raises on a value written behind the application's back: the decimal
# converter's TypeError, the datetime converter's AttributeError (a text it cannot parse), ValueError from
# UUIDs, integers and dates, InvalidOperation (an ArithmeticError) from decimals.
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    AttributeError,
    ArithmeticError,
    ValidationError,
)

# Kept as text on SQLite, where a query compares the text, not the value.
TEXT_STORED = (models.UUIDField, models.DateTimeField, models.DateField)
_UNREADABLE = object()


@dataclass(frozen=True, slots=True)
class StoredRow:
    pk: str  # as the seals name it (`pk_text`); as stored when the key itself cannot be read
    stored_pk: Any  # the key as stored (where the next page starts)
    content: str | None  # the canonical content; None when a value cannot be read
    problems: tuple[str, ...] = ()  # values that cannot be read, or are stored in a form never written


def quoted(value: Any) -> str:
    """A stored or sealed value as a report quotes it: JSON, cut short at 80 characters."""
    plain = value if value is None or isinstance(value, int | float | str | list | dict) else str(value)
    text = json.dumps(plain, ensure_ascii=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _stored_field(field: models.Field) -> models.Field:
    """The field whose type decides how a column is stored (a foreign key's target)."""
    return cast(models.ForeignKey, field).target_field if field.is_relation and field.many_to_one else field


class StoredTable:
    """One ledger table's rows as stored, a page or a list of keys at a time."""

    def __init__(self, model: type[models.Model], using: str) -> None:
        model = model._meta.concrete_model or model
        self.model, self.using = model, using
        self.table = model._meta.db_table
        connection = connections[using]
        quote = connection.ops.quote_name
        self.fields = list(model._meta.concrete_fields)
        self.pk_field = model._meta.pk
        self.pk_index = self.fields.index(self.pk_field)
        sqlite = connection.vendor == "sqlite"
        self.as_text = [sqlite and isinstance(_stored_field(field), TEXT_STORED) for field in self.fields]
        # SQLite keeps whatever is written into an integer column, and Django reads text there back as text
        # (no converter): a perm_id of 'x' would load, then fail wherever the gateway counts on a number.
        self.integral = [isinstance(_stored_field(field), models.IntegerField) for field in self.fields]
        # Text-stored columns are cast so that no converter of the database driver runs on them either.
        columns = [
            f"CAST({quote(str(field.column))} AS TEXT)" if text else quote(str(field.column))
            for field, text in zip(self.fields, self.as_text, strict=True)
        ]
        self._select = f"SELECT {', '.join(columns)} FROM {quote(self.table)}"  # noqa: S608 - names from the model
        self._pk_column = quote(str(self.pk_field.column))
        self._pk_select = columns[self.pk_index]
        self._quoted_table = quote(self.table)
        self._columns = [field.get_col(self.table) for field in self.fields]
        # Django's converters per column (the backend's, then the field's), as `.values()` applies them.
        self._converters = [
            connection.ops.get_db_converters(col) + col.get_db_converters(connection) for col in self._columns
        ]

    def page(self, *, after: Any = None, limit: int) -> list[StoredRow]:
        """Up to `limit` rows in primary-key order, after the stored key `after` (a row's `stored_pk`)."""
        where, params = ("", []) if after is None else (f" WHERE {self._pk_column} > %s", [after])
        return self._read(f"{self._select}{where} ORDER BY {self._pk_column} LIMIT %s", [*params, limit])

    def keys(self, *, after: Any = None, limit: int) -> list[tuple[str, Any]]:
        """Up to `limit` keys in primary-key order after the stored key `after`: (as the seals name it, as stored)."""
        where, params = ("", []) if after is None else (f" WHERE {self._pk_column} > %s", [after])
        sql = f"SELECT {self._pk_select} FROM {self._quoted_table}{where} ORDER BY {self._pk_column} LIMIT %s"  # noqa: S608
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, [*params, limit])
            return [(self._key_text(stored), stored) for (stored,) in cursor.fetchall()]

    def rows(self, pks: Sequence[Any]) -> dict[str, StoredRow]:
        """{pk as the seals name it: row} for these primary keys (values as the model holds them)."""
        if not pks:
            return {}
        connection = connections[self.using]
        keys = [self.pk_field.get_db_prep_value(pk, connection, prepared=False) for pk in pks]
        marks = ", ".join(["%s"] * len(keys))
        found = self._read(f"{self._select} WHERE {self._pk_column} IN ({marks})", keys)
        return {row.pk: row for row in found}

    def _read(self, sql: str, params: list[Any]) -> list[StoredRow]:
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            return [self._row(raw) for raw in cursor.fetchall()]

    def _row(self, raw: Sequence[Any]) -> StoredRow:
        connection = connections[self.using]
        values: dict[str, Any] = {}
        problems = []
        for field, stored, text, integral, col, converters in zip(
            self.fields, raw, self.as_text, self.integral, self._columns, self._converters, strict=True
        ):
            value = stored
            try:
                if integral and stored is not None and type(stored) is not int:
                    raise TypeError(f"{stored!r} is not an integer")
                for converter in converters:
                    value = converter(value, col, connection)
                written = stored
                if text and value is not None:
                    written = field.get_db_prep_value(value, connection, prepared=False)
            except Exception:  # noqa: BLE001 - whatever a hand-edited value makes a converter raise is this row's problem
                kind = field.get_internal_type()
                problems.append(f"{field.column} holds {quoted(stored)}, which is not a valid {kind}")
                value = _UNREADABLE
            else:
                if written != stored:
                    problems.append(
                        f"{field.column} is stored as {quoted(stored)}, a form the gateway never writes "
                        f"({quoted(written)}): queries no longer find it as before"
                    )
            values[field.attname] = value
        key = values[self.pk_field.attname]
        pk = str(raw[self.pk_index]) if key is _UNREADABLE else pk_text(key)
        content = None
        if not any(value is _UNREADABLE for value in values.values()):
            try:
                content = content_of(self.model, values)
            except (TypeError, ValueError) as exc:  # e.g. a number column holding infinity
                problems.append(f"cannot be sealed as stored: {exc}")
        return StoredRow(pk, raw[self.pk_index], content, tuple(problems))

    def _key_text(self, stored: Any) -> str:
        """A stored key as the seals name it; as stored when it cannot be read (then it has no seal either)."""
        connection = connections[self.using]
        col = self._columns[self.pk_index]
        value = stored
        try:
            for converter in self._converters[self.pk_index]:
                value = converter(value, col, connection)
        except Exception:  # noqa: BLE001 - a hand-edited key is reported as unsealed under its stored text
            return str(stored)
        return pk_text(value)
