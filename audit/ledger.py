"""Append-only models: the code-level guards shared by every ledger table.

Rows of an `AppendOnlyModel` are inserted, never updated or deleted. These guards catch mistakes
in Python (the model, queryset and admin layers); the database triggers in `audit.triggers` catch raw
SQL, and the read-only admin in `audit.admin.AppendOnlyAdmin` keeps the operator console honest.

What is refused, always with `ibkrgw.errors.AppendOnlyViolation`:
- `instance.save()` of a row that came from the database (or with `force_update`/`update_fields`);
- `instance.delete()`;
- `Model.objects.update()`, `.delete()`, `.bulk_update()`, `.update_or_create()` on the default manager.

`Model.objects.create()` and `bulk_create()` of new rows work as usual, and seal each new row:
in the same transaction, its content is appended to the ledger's hash chain (`audit.seal`), so
`manage.py audit_verify` finds any later change made past these guards. Inside
`audit.seal.sealed_at_commit` the rows are sealed together when that block ends. A subclass that is
itself the chain (`LedgerSeal`) sets `ledger_sealed = False`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NoReturn, Self

from django.db import models, router, transaction

from ibkrgw.errors import AppendOnlyViolation


def _refuse(model: type[models.Model] | models.Model, what: str) -> NoReturn:
    label = model._meta.label
    raise AppendOnlyViolation(f"{label} is append-only: {what} is not allowed.")


class AppendOnlyQuerySet(models.QuerySet):
    """A QuerySet that reads and inserts, but refuses bulk changes of existing rows."""

    def update(self, **kwargs: Any) -> NoReturn:
        _refuse(self.model, "update()")

    def delete(self) -> NoReturn:
        _refuse(self.model, "delete()")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> NoReturn:
        _refuse(self.model, "bulk_update()")

    def update_or_create(self, defaults: Any = None, create_defaults: Any = None, **kwargs: Any) -> NoReturn:
        # It would update a matching row; say so before touching the database.
        _refuse(self.model, "update_or_create()")

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if not getattr(self.model, "ledger_sealed", False):
            return super().bulk_create(objs, *args, **kwargs)
        if kwargs.get("update_conflicts"):
            _refuse(self.model, "bulk_create(update_conflicts=True)")
        if kwargs.get("ignore_conflicts"):
            # The rows skipped are not known, so they could not be left unsealed.
            _refuse(self.model, "bulk_create(ignore_conflicts=True)")
        from audit.seal import lock_ledger, seal_or_defer

        objs = list(objs)
        with transaction.atomic(using=self.db, savepoint=False):
            lock_ledger(self.db)
            created = super().bulk_create(objs, *args, **kwargs)
            if any(obj.pk is None for obj in created):
                raise RuntimeError(f"{self.model._meta.label}: bulk_create returned rows without primary keys")
            seal_or_defer(self.model, [obj.pk for obj in created], using=self.db)
        return created

    delete.alters_data = True  # type: ignore[attr-defined]
    update.alters_data = True  # type: ignore[attr-defined]


class AppendOnlyModel(models.Model):
    """Abstract base for ledger rows. Subclasses keep `objects` as their default manager."""

    # Each insert appends the row's content to the seal chain, in the same transaction.
    ledger_sealed = True

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields") is not None:
            _refuse(self, "updating a saved row")
        # Always INSERT: with an explicit primary key Django would otherwise try an UPDATE first.
        kwargs["force_insert"] = True
        if not self.ledger_sealed:
            super().save(*args, **kwargs)
            return
        from audit.insert import insert_row, insertable
        from audit.seal import lock_ledger, seal_or_defer

        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        # The row and its seal commit together or not at all (no savepoint: nothing to undo separately).
        with transaction.atomic(using=using, savepoint=False):
            lock_ledger(using)
            if not args and set(kwargs) <= {"using", "force_insert"} and insertable(self):
                insert_row(self, using)  # save(force_insert=True) with its statement compiled once
            else:
                super().save(*args, **kwargs)
            seal_or_defer(type(self), [self.pk], using=using)

    save.alters_data = True  # type: ignore[attr-defined]

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self, "delete()")

    delete.alters_data = True  # type: ignore[attr-defined]

    @classmethod
    def from_db(cls, db: str | None, field_names: Collection[str], values: Collection[Any], **kwargs: Any) -> Self:
        # A NOT NULL column read as NULL: a value the database driver could not read (on SQLite, an empty
        # text in a date column reads as NULL). Raised like any unreadable value, so the doors name the row
        # (`audit.readable`) instead of answering null for a value that cannot be null.
        for name, value in zip(field_names, values, strict=False):
            if value is None and name in cls._not_null_attnames():
                raise ValueError(f"{cls._meta.label}.{name} reads as NULL, which it cannot hold")
        return super().from_db(db, field_names, values, **kwargs)

    @classmethod
    def _not_null_attnames(cls) -> frozenset[str]:
        found = cls.__dict__.get("_not_null")
        if found is None:
            found = frozenset(f.attname for f in cls._meta.concrete_fields if not f.null)
            cls._not_null = found  # type: ignore[attr-defined]  # per concrete class, computed once
        return found
