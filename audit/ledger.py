"""Append-only models: the code-level guards shared by every ledger table.

Rows of an `AppendOnlyModel` are inserted, never updated or deleted. These guards catch mistakes
in Python (layers 1-3 of STYLE.md section 6); the database triggers in `audit.triggers` catch raw
SQL, and the read-only admin in `audit.admin.AppendOnlyAdmin` keeps the operator console honest.

What is refused, always with `ibkrgw.errors.AppendOnlyViolation`:
- `instance.save()` of a row that came from the database (or with `force_update`/`update_fields`);
- `instance.delete()`;
- `Model.objects.update()`, `.delete()`, `.bulk_update()`, `.update_or_create()` on the default manager.

`Model.objects.create()` and `bulk_create()` of new rows work as usual.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models

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

    delete.alters_data = True  # type: ignore[attr-defined]
    update.alters_data = True  # type: ignore[attr-defined]


class AppendOnlyModel(models.Model):
    """Abstract base for ledger rows. Subclasses keep `objects` as their default manager."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields") is not None:
            _refuse(self, "updating a saved row")
        # Always INSERT: with an explicit primary key Django would otherwise try an UPDATE first.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    save.alters_data = True  # type: ignore[attr-defined]

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self, "delete()")

    delete.alters_data = True  # type: ignore[attr-defined]
