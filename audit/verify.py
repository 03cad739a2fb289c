"""Verify the whole ledger: triggers, the audit chain, the seal chain, and every row against its seal.

`verify_ledger()` streams every table in chunks (memory stays flat on a large ledger) and returns a
`LedgerReport` listing problems in the order found, each naming what broke:

1. the audit log's own hash chain is broken (`audit.chain`);
2. the seal chain is broken: a seal was changed, removed or re-ordered, or (once seals are keyed)
   its MAC is missing or was not made with the seal key (`audit.seal`);
3. per ledger table, row by row: a row whose content differs from its seal (and which columns),
   a row with no seal (inserted behind the application's back), a seal whose row is gone (deleted),
   a value that cannot be read or is stored in a form the gateway never writes (`audit.stored`);
4. optionally, an anchor (a head recorded elsewhere earlier) that the chain no longer contains;
5. an API key row that does not match its MAC, or that the audit log says was revoked while its row
   says not (`ibkrgw.apikeys.apikey_problems`): keys are not ledger rows, but one changed in the
   database could grant what nobody granted;
6. an append-only trigger is missing, disabled, or altered (present, but not the trigger the migrations
   write: e.g. a same-named one that never fires), so raw UPDATE/DELETE would no longer be refused.

It reads without a transaction, so it can run on a live gateway: a row and its seal commit
together, and rows are compared with seals read after them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections, models

from audit.chain import verify_chain
from audit.models import AuditEntry, LedgerSeal
from audit.seal import sealed_models, verify_seal_chain
from audit.stored import StoredTable, quoted
from audit.triggers import missing_triggers
from ibkrgw.apikeys import apikey_problems
from ibkrgw.users import user_problems


@dataclass(frozen=True, slots=True)
class Head:
    """The newest seal: anchoring it elsewhere pins everything up to it."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"seq={self.seq} sha256={self.hash}"


@dataclass
class LedgerReport:
    problems: list[str] = field(default_factory=list)
    audit_entries: int = 0
    seals: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    api_keys: int = 0
    users: int = 0
    head: Head | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def ledger_head(using: str = DEFAULT_DB_ALIAS) -> Head | None:
    last = LedgerSeal.objects.using(using).order_by("-seq").values_list("seq", "seal_hash").first()
    return Head(*last) if last else None


def _chunks(iterable: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def describe_difference(sealed: str, found: str) -> str:
    """Which columns differ between two canonical contents, e.g. `price: sealed "189.42", now "1"`."""
    try:
        before, after = json.loads(sealed), json.loads(found)
    except ValueError:
        return "the sealed content is not even JSON any more"
    if not isinstance(before, dict):
        return "the sealed content is not a row any more"
    parts = []
    for column in sorted(before.keys() | after.keys()):
        old, new = before.get(column), after.get(column)
        if old != new:
            parts.append(f"{column}: sealed {quoted(old)}, now {quoted(new)}")
    return "; ".join(parts) or "the stored text differs"


# What is wrong with one row, in the same words wherever it is found (here and in `audit.watch`).
def row_unsealed(table: str, pk: str) -> str:
    return (
        f"{table} pk={pk}: row has no seal: inserted behind the application's back "
        "(raw SQL, a restored backup) or its seal was deleted"
    )


def row_differs(table: str, pk: str, seq: int, sealed: str, found: str) -> str:
    return f"{table} pk={pk}: row differs from its seal (seal seq {seq}): {describe_difference(sealed, found)}"


def row_malformed(table: str, pk: str, problems: tuple[str, ...]) -> str:
    return f"{table} pk={pk}: row changed behind the application's back: {'; '.join(problems)}"


def row_gone(table: str, pk: str, seq: int) -> str:
    return f"{table} pk={pk}: row is gone (sealed at seq {seq}): deleted, or an older backup restored"


def _verify_table(
    model: type[models.Model], using: str, chunk_size: int, sealed_count: int, report: LedgerReport
) -> None:
    table = model._meta.db_table
    stored = StoredTable(model, using)
    seals = LedgerSeal.objects.using(using).filter(table=table)
    count = matched = 0
    after = None
    while chunk := stored.page(after=after, limit=chunk_size):
        after = chunk[-1].stored_pk
        count += len(chunk)
        sealed = {
            pk: (seq, content)
            for pk, seq, content in seals.filter(row_pk__in=[row.pk for row in chunk]).values_list(
                "row_pk", "seq", "content"
            )
        }
        for row in chunk:
            if row.problems:
                report.problems.append(row_malformed(table, row.pk, row.problems))
            if row.pk not in sealed:
                report.problems.append(row_unsealed(table, row.pk))
                continue
            matched += 1
            seq, content = sealed[row.pk]
            if row.content is not None and row.content != content:
                report.problems.append(row_differs(table, row.pk, seq, content, row.content))
    report.rows[table] = count
    if sealed_count > matched:
        # Some seals have no row: find which, a chunk of seals at a time.
        pk_field = model._meta.pk
        ordered = seals.order_by("seq").values_list("seq", "row_pk").iterator(chunk_size=chunk_size)
        for seal_chunk in _chunks(ordered, chunk_size):
            wanted = []
            for _, row_pk in seal_chunk:
                try:
                    wanted.append(pk_field.to_python(row_pk))
                except ValidationError:
                    pass  # a forged seal naming a key this table cannot have: reported as gone below
            present = stored.rows(wanted)
            for seq, row_pk in seal_chunk:
                if row_pk not in present:
                    report.problems.append(row_gone(table, row_pk, seq))


def verify_ledger(using: str = DEFAULT_DB_ALIAS, *, chunk_size: int = 2000, anchor: Head | None = None) -> LedgerReport:
    """Check everything listed in the module docstring; `report.ok` when nothing was found."""
    report = LedgerReport()
    connection = connections[using]

    def counted_entries() -> Iterator[AuditEntry]:
        for entry in AuditEntry.objects.using(using).order_by("seq").iterator(chunk_size=chunk_size):
            report.audit_entries += 1
            yield entry

    broken = verify_chain(counted_entries())
    if broken is not None:
        report.problems.append(
            f"audit chain BROKEN at seq {broken.seq} (event {broken.event}): {broken.reason}. "
            f"{report.audit_entries - 1} entries before it verified."
        )

    per_table: Counter[str] = Counter()

    def counted_seals() -> Iterator[Any]:
        for seal in LedgerSeal.objects.using(using).order_by("seq").iterator(chunk_size=chunk_size):
            report.seals += 1
            per_table[seal.table] += 1
            yield seal

    broken = verify_seal_chain(counted_seals())
    if broken is not None:
        report.problems.append(
            f"seal chain BROKEN at seal seq {broken.seq} ({broken.event}): {broken.reason}. "
            f"{max(min(report.seals, broken.seq) - 1, 0)} seals before it verified."
        )
        # The rest of the seals were not read: count them for the per-table comparison.
        per_table = Counter(dict(LedgerSeal.objects.using(using).values_list("table").annotate(n=models.Count("seq"))))
        report.seals = sum(per_table.values())

    known = set()
    for model in sealed_models():
        table = model._meta.db_table
        known.add(table)
        _verify_table(model, using, chunk_size, per_table[table], report)
    for table in sorted(set(per_table) - known):
        report.problems.append(f"{per_table[table]} seals name table {table!r}, which is not a ledger table")

    report.head = ledger_head(using)
    if anchor is not None:
        stored = LedgerSeal.objects.using(using).filter(seq=anchor.seq).values_list("seal_hash", flat=True).first()
        if stored is None:
            report.problems.append(f"anchor {anchor}: the chain has no seal {anchor.seq}: it was truncated")
        elif stored != anchor.hash:
            report.problems.append(
                f"anchor {anchor}: seal {anchor.seq} now hashes to {stored}: the ledger was rewritten up to it"
            )
    # API keys are not ledger rows, but a key row changed in the database could grant what nobody granted.
    report.api_keys, key_problems = apikey_problems(using)
    report.problems += key_problems
    # Nor are users, who could be made staff or given a known password the same way.
    report.users, user_problems_found = user_problems(using)
    report.problems += user_problems_found
    # Last, in one line: a missing trigger is an open door, the lines above are what came through it.
    missing = missing_triggers(connection)
    if missing:
        names = ", ".join(missing)
        report.problems.append(
            f"trigger(s) missing, disabled or altered, raw changes of those tables are not refused: {names}"
        )
    return report
