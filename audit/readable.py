"""Ledger rows for the doors, when one of them cannot be read.

Someone who can write the database can leave a value in a ledger row that the application cannot
read (text in a number or date column on SQLite, text in an integer column). Django's converters
then raise while loading the row (or the rendering of it does), and the whole read fails with it:
a list, an order with its fills, a websocket replay. `audit_verify` and the watch name such a row;
the doors must not go blind because of it, and must not drop it without a word either:

- `readable(queryset, render, start=, stop=)` reads and renders a window of a queryset as usual.
  Only when that fails does it read the window again one row at a time: the rows that can be read
  are kept, the ones that cannot are named (`Unreadable`: table, primary key and what is wrong),
  together with the ledger rows read with them (an order's events, fills and commissions, a fill's
  order). The operator console lists what it can and names the rest; the websocket stream sends an
  error frame in the place of each unreadable entry.
- `unreadable_error(queryset, exc, start=, stop=)`: the same finding as one error,
  `LedgerUnreadable` (409 `ledger_unreadable`), for answers that are one unit (a REST response, an
  MCP tool result), which a program could otherwise take as complete; `ledger_page(queryset, render,
  start=, stop=)` renders such a unit (a page of orders, fills or audit entries) or raises it.

A failure that no ledger row explains is re-raised as it was: a bug stays a bug. The rows are read
as stored with `audit.stored`, the same reader `audit_verify` uses, and a readable row is also
compared with its seal, so a row whose value only the rendering cannot take is named as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from django.db import models

from audit.models import LedgerSeal
from audit.seal import (
    MAC_NOT_OURS,
    MAC_UNVOUCHED,
    SEALS_KEYED_EVENT,
    is_upgrade_entry,
    mac_valid,
    pk_text,
    seal_hash,
    seal_keys,
    sealed_models,
)
from audit.stored import UNREADABLE_ERRORS, StoredTable
from audit.verify import describe_difference
from ibkrgw.errors import LedgerUnreadable

RELATED_DEPTH = 2  # an order, its fills, their commissions

T = TypeVar("T")
M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """One ledger row that is not what was sealed, as stored."""

    table: str
    pk: str
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "pk": self.pk, "problems": list(self.problems)}

    def __str__(self) -> str:
        return f"{self.table} pk={self.pk}: {'; '.join(self.problems)}"


@dataclass
class Readable(Generic[T]):
    """A window of a list: the rows read (rendered), and per row that could not be, why (by primary key)."""

    rows: list[T]
    unreadable: dict[Any, tuple[Unreadable, ...]] = field(default_factory=dict)

    def named(self) -> list[Unreadable]:
        """Every ledger row found unreadable, each once, in the order found."""
        return list(dict.fromkeys(row for rows in self.unreadable.values() for row in rows))


@overload
def readable(queryset: models.QuerySet[M], *, start: int = 0, stop: int | None = None) -> Readable[M]: ...


@overload
def readable(
    queryset: models.QuerySet, render: Callable[[Any], T], *, start: int = 0, stop: int | None = None
) -> Readable[T]: ...


def readable(
    queryset: models.QuerySet,
    render: Callable[[Any], Any] | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
) -> Readable[Any]:
    """`render` of each row of `queryset[start:stop]` (the rows themselves without it); the rows that cannot
    be read named instead."""
    if render is None:
        render = _itself
    window = queryset[start:stop]
    try:
        return Readable([render(row) for row in window])
    except UNREADABLE_ERRORS:
        pks = list(window.values_list("pk", flat=True))
    found: Readable[Any] = Readable([])
    for pk in pks:
        try:
            found.rows.extend(render(row) for row in queryset.filter(pk=pk))
        except UNREADABLE_ERRORS:
            named = locate(queryset.model, [pk], using=queryset.db)
            if not named:
                raise
            found.unreadable[pk] = tuple(named)
    return found


def readable_rows(queryset: models.QuerySet[M], *, log: logging.Logger, leaving_out: str) -> list[M]:
    """The rows of `queryset` that can be read; each one that cannot is named in `log` as an error ("<leaving_out>:
    <row>"), for background work that must go on around a tampered row (reconciliation, the halt's sweeps)."""
    found = readable(queryset)
    for row in found.named():
        log.error("%s: %s (run manage.py audit_verify)", leaving_out, row)
    return found.rows


def strict_sqlite_time_reads() -> None:
    """On SQLite, a date or time column holding text that is no date or time (written behind the
    application's back) reads as NULL through Django's driver converters, and a NOT NULL `created_at`
    would be answered as `null`. Such a value now raises ValueError like any other unreadable value, so
    the doors name the row (`ledger_unreadable`); `audit.stored` reads these columns as text and says what
    they hold."""
    import sqlite3

    from django.db.backends.sqlite3 import base  # registers Django's converters first, which these replace
    from django.utils.dateparse import parse_date, parse_datetime, parse_time

    def strict(parse: Callable[[str], Any], kind: str) -> Callable[[bytes], Any]:
        def convert(raw: bytes) -> Any:
            value = parse(raw.decode())
            if value is None:
                raise ValueError(f"{raw[:40]!r} is not a {kind}")
            return value

        return convert

    del base
    sqlite3.register_converter("date", strict(parse_date, "date"))
    sqlite3.register_converter("time", strict(parse_time, "time"))
    sqlite3.register_converter("datetime", strict(parse_datetime, "date and time"))
    sqlite3.register_converter("timestamp", strict(parse_datetime, "date and time"))


def _itself(row: Any) -> Any:
    return row


def unreadable_error(
    queryset: models.QuerySet, exc: Exception, *, start: int = 0, stop: int | None = None
) -> LedgerUnreadable:
    """The error naming the unreadable rows of `queryset[start:stop]` that made a read fail with `exc`;
    `exc` itself when no ledger row explains it."""
    pks = list(queryset[start:stop].values_list("pk", flat=True))
    named = locate(queryset.model, pks, using=queryset.db)
    if not named:
        raise exc
    return LedgerUnreadable([row.as_dict() for row in named])


def ledger_page(queryset: models.QuerySet, render: Callable[[Any], T], *, start: int, stop: int) -> list[T]:
    """`render` of every row of `queryset[start:stop]`, or 409 ledger_unreadable naming the rows of that window
    that cannot be read as sealed: for a page a program takes whole (an MCP list), which a missing row would
    leave looking complete (a position summed from fills, an order or an audit entry missed)."""
    try:
        return [render(row) for row in queryset[start:stop]]
    except UNREADABLE_ERRORS as exc:
        raise unreadable_error(queryset, exc, start=start, stop=stop) from exc


def locate(model: type[models.Model], pks: Sequence[Any], *, using: str, seals: bool = True) -> list[Unreadable]:
    """The rows among `pks` of `model`, the ledger rows they point to and those read with them (its
    events, fills, their commissions), that cannot be read or (with `seals`) differ from their seals."""
    ledger = set(sealed_models())
    found = _unreadable(model, pks, using, ledger, RELATED_DEPTH, seals)
    for fk in model._meta.concrete_fields:  # what a list reads along (a fill's order, an exit's entry)
        target = fk.related_model if fk.many_to_one or fk.one_to_one else None
        if isinstance(target, type) and target in ledger:
            keys = model._base_manager.using(using).filter(pk__in=pks).values_list(fk.attname, flat=True)
            found += _unreadable(target, [key for key in keys if key is not None], using, ledger, 0, seals)
    return list(dict.fromkeys(found))


def untrusted(
    model: type[models.Model], pks: Sequence[Any], *, using: str, sealed_alone: dict[type[models.Model], list[Any]]
) -> list[Unreadable]:
    """`locate` (rows that cannot be read or differ from their seals), and the rows of `sealed_alone` ({model:
    pks}) whose own seal cannot vouch for them: for a service about to act at the
    broker on what the rows say, which must not take a forged row for the gateway's own (`seals_untrusted`)."""
    found = locate(model, pks, using=using)
    for sealed_model, keys in sealed_alone.items():
        table = sealed_model._meta.db_table
        texts = [pk_text(key) for key in keys]
        for pk, why in seals_untrusted(table, texts, using=using).items():
            found.append(Unreadable(table, pk, (why,)))
    return list(dict.fromkeys(found))


def seals_untrusted(table: str, pks: Sequence[str], *, using: str) -> dict[str, str]:
    """{row pk: why} for the rows of `table` among `pks` whose own seal cannot vouch for them without a walk of the
    whole chain: no seal at all (a row inserted behind the gateway's back), or a seal whose MAC was not made with
    the seal key over its own fields. A seal without a MAC vouches only when it is older than the upgrade entry
    that made the seals keyed (`verify_seal_chain`'s rule, for one seal). Whether the row still matches its seal's
    content is `locate`'s question; a forger who rewrites both cannot make the MAC."""
    keys = seal_keys()
    found = {seal.row_pk: seal for seal in LedgerSeal.objects.using(using).filter(table=table, row_pk__in=list(pks))}
    why = {}
    for pk in pks:
        seal = found.get(pk)
        if seal is None:
            why[pk] = "no seal: not written by the gateway"
        elif seal.mac is None:
            if not _keyed_upgrade_after(seal.seq, keys, using):
                why[pk] = MAC_UNVOUCHED
        elif not mac_valid(seal_hash(seal), seal.mac, keys):
            why[pk] = MAC_NOT_OURS
    return why


def _keyed_upgrade_after(seq: int, keys: Sequence[bytes], using: str) -> bool:
    """Whether the upgrade entry that made the seals keyed was sealed after `seq`, with a MAC of this gateway."""
    candidates = LedgerSeal.objects.using(using).filter(
        table="audit_auditentry", seq__gt=seq, mac__isnull=False, content__contains=SEALS_KEYED_EVENT
    )
    upgrades = [seal for seal in candidates.order_by("seq")[:4] if is_upgrade_entry(seal)]
    return any(seal.mac is not None and mac_valid(seal_hash(seal), seal.mac, keys) for seal in upgrades)


def _unreadable(
    model: type[models.Model],
    pks: Sequence[Any],
    using: str,
    ledger: set[type[models.Model]],
    depth: int,
    seals: bool = True,
) -> list[Unreadable]:
    if not pks or model not in ledger:
        return []
    table = StoredTable(model, using)
    rows = table.rows(pks)
    sealed = (
        dict(
            LedgerSeal.objects.using(using)
            .filter(table=table.table, row_pk__in=list(rows))
            .values_list("row_pk", "content")
        )
        if seals
        else {}
    )
    found = []
    for pk, row in rows.items():
        problems = list(row.problems)
        if not problems and row.content is not None and pk in sealed and sealed[pk] != row.content:
            problems.append(f"differs from its seal: {describe_difference(sealed[pk], row.content)}")
        if problems:
            found.append(Unreadable(table.table, pk, tuple(problems)))
    if depth:
        for relation in model._meta.related_objects:  # the rows pointing at these (events, fills, exits)
            related = relation.related_model
            if isinstance(related, type) and related in ledger:
                children = related._base_manager.using(using).filter(**{f"{relation.field.name}__in": pks})
                keys = list(children.values_list("pk", flat=True))
                found += _unreadable(related, keys, using, ledger, depth - 1, seals)
    return found
