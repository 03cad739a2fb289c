"""Ledger seals: the content of every ledger row, hash-chained at the moment it is inserted.

Every insert of an `AppendOnlyModel` row (orders, order events, fills, commissions, kill-switch
events, audit entries) writes, in the same transaction, one `LedgerSeal`: the row's table, primary
key and *content* (every column, read back from the database, in a canonical text form), chained
to the previous seal by SHA-256. `audit.verify` later recomputes each row's content and compares:
a row rewritten by any means (INSERT OR REPLACE, a dropped trigger, a restored backup), deleted,
or inserted behind the application's back no longer matches the seals, and rewriting the seals
too breaks their chain (see docs/audit.md).

Canonical content: a JSON object of `{column name: value}` with keys sorted, no whitespace, ASCII
only; NULL columns are left out (so a nullable column added later leaves old seals valid);
Decimals as plain normalised numbers (`"189.42"`, `"100"`: a backend's trailing zeros do not
count); datetimes in UTC ISO 8601 with microseconds; UUIDs in their dashed form; JSON columns as
their canonical JSON. The row is read back after its INSERT so the seal holds exactly what the
database stores (SQLite keeps 15 significant digits of a decimal, PostgreSQL reorders jsonb keys).

A seal's hash is `sha256(canonical_json({seq, table, row_pk, content, prev_hash}))`, the first
seal's `prev_hash` is `GENESIS_HASH`. The last seal (its seq and hash) is the ledger's *head*: an
operator who keeps a copy of it elsewhere can later prove nothing before it was rewritten.

A seal's `mac` is `HMAC-SHA256(seal key, seal_hash)`. The hash alone can be recomputed by anyone
who can write the database; the MAC only by whoever holds the seal key, which is kept outside it
(`LEDGER_SEAL_KEY`, else derived from `SECRET_KEY`; see `seal_keys`). Seals written before the key
existed have no MAC: the upgrade's first keyed seal (its `ledger.seals_keyed` audit entry) vouches
for them, its hash chaining over theirs, and every seal after it must carry a valid MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.apps import apps as global_apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.utils.crypto import salted_hmac

from audit.chain import GENESIS_HASH, ChainBreak, canonical_json
from ibkrgw.prepared import PreparedRead

SEAL_HASHED_FIELDS = ("seq", "table", "row_pk", "content", "prev_hash")
# Any fixed 64-bit number; it only has to be the same in every process ("audit" in ASCII).
PG_ADVISORY_LOCK_KEY = 0x6175646974


def lock_ledger(using: str) -> None:
    """Make ledger writers take turns for the rest of the transaction, so each seal follows the true last one.

    SQLite: every transaction opens with BEGIN IMMEDIATE, which already holds the single write
    lock. PostgreSQL: a transaction-scoped advisory lock (re-entrant), taken *before* a ledger
    insert, so no two transactions hold uncommitted ledger rows at once (no unique-key waits
    between writers, hence no deadlock). Should two writers race anyway, `seq` is the primary
    key: the second insert fails instead of forking the chain.
    """
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_ADVISORY_LOCK_KEY])


def is_sealed(model: type[models.Model]) -> bool:
    meta = model._meta
    return bool(getattr(model, "ledger_sealed", False)) and not meta.abstract and not meta.proxy


def sealed_models() -> list[type[models.Model]]:
    """Every model whose rows are sealed, in a stable order (app label, then table)."""
    found = [m for m in global_apps.get_models() if is_sealed(m)]
    return sorted(found, key=lambda m: (m._meta.app_label, m._meta.db_table))


def _columns(model: type[models.Model]) -> list[tuple[str, str]]:
    # Concrete fields always have a column (only non-concrete ones have None).
    return [(field.attname, str(field.column)) for field in model._meta.concrete_fields]


def canonical_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be sealed")
        text = format(value.normalize(), "f")
        return "0" if text in ("0", "-0") else text
    if isinstance(value, uuid.UUID):
        return str(value)
    # canonical_json writes aware datetimes in UTC ISO 8601 (and refuses naive ones), JSON canonically.
    return value


def content_of(model: type[models.Model], values: dict[str, Any]) -> str:
    """The canonical content of one row, from `values` keyed by attribute name (as `.values()` gives)."""
    row = {}
    for attname, column in _columns(model):
        value = values[attname]
        if value is not None:
            row[column] = canonical_value(value)
    return canonical_json(row)


def pk_text(value: Any) -> str:
    return str(value)


_READ_SIZES = (1, 8, 64)  # rows read back per statement; a shorter list is padded with its first key


def read_contents(model: type[models.Model], pks: Sequence[Any], using: str) -> dict[str, str]:
    """{pk as text: canonical content} of the rows of `model` with these primary keys, as stored.

    The seal is on every ledger insert's path, so the read is compiled once per model, size and
    connection (`ibkrgw.prepared`); the rows still go through Django's converters (Decimal,
    datetime, JSON, UUID), so the values are exactly what `.values()` gives during verification."""
    attnames = [attname for attname, _ in _columns(model)]
    pk_index = attnames.index(model._meta.pk.attname)
    contents = {}
    largest = _READ_SIZES[-1]
    for start in range(0, len(pks), largest):
        chunk = list(pks[start : start + largest])
        size = next(n for n in _READ_SIZES if n >= len(chunk))
        padded = chunk + chunk[:1] * (size - len(chunk))  # repeating a key leaves the rows IN finds unchanged
        for row in _row_reader(model, size).all(*padded, using=using):
            values = dict(zip(attnames, row, strict=True))
            contents[pk_text(row[pk_index])] = content_of(model, values)
    return contents


_row_readers: dict[tuple[type[models.Model], int], PreparedRead] = {}


def _row_reader(model: type[models.Model], size: int) -> PreparedRead:
    """`model`'s columns for `size` primary keys (`pk__in`). Historical models (migrations) get their own."""
    reader = _row_readers.get((model, size))
    if reader is None:
        pk_field = model._meta.pk
        attnames = [attname for attname, _ in _columns(model)]
        # Any valid keys compile the statement; the parameters are replaced on each read.
        if isinstance(pk_field, models.UUIDField):
            samples: list[Any] = [uuid.UUID(int=i) for i in range(1, size + 1)]
        else:
            samples = [pk_field.to_python(i) for i in range(1, size + 1)]
        reader = _row_readers[(model, size)] = PreparedRead(
            lambda *pks: model._base_manager.values_list(*attnames).filter(pk__in=pks),
            params=[(pk_field, sample) for sample in samples],
        )
    return reader


@dataclass(frozen=True, slots=True)
class Seal:
    seq: int
    table: str
    row_pk: str
    content: str
    prev_hash: str
    seal_hash: str = ""
    mac: str | None = None


def seal_hash(seal: Any) -> str:
    payload = {name: getattr(seal, name) for name in SEAL_HASHED_FIELDS}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


# -- the seal key ---------------------------------------------------------------------------------
_KEY_SALT = "ibkrgw.audit.seal"


@lru_cache(maxsize=16)
def _derived_key(secret: str) -> bytes:
    # The seals get a key of their own, so no other HMAC made from the same secret ever equals a MAC.
    return salted_hmac(_KEY_SALT, "ledger seal key", secret=secret, algorithm="sha256").digest()


def seal_keys() -> list[bytes]:
    """The seal key, first (new seals are made with it), then the earlier ones still accepted when verifying.

    Each comes from a secret outside the database: `LEDGER_SEAL_KEY`, or `SECRET_KEY` when that is
    unset; the fallbacks are `LEDGER_SEAL_KEY_FALLBACKS` (and, without `LEDGER_SEAL_KEY`,
    `SECRET_KEY_FALLBACKS`), earlier values of either."""
    current = settings.LEDGER_SEAL_KEY
    secrets = [current or settings.SECRET_KEY, *settings.LEDGER_SEAL_KEY_FALLBACKS]
    if not current:
        secrets += settings.SECRET_KEY_FALLBACKS
    return [_derived_key(secret) for secret in secrets]


def seal_mac(hash_hex: str, key: bytes) -> str:
    return hmac.new(key, hash_hex.encode("ascii"), hashlib.sha256).hexdigest()


def mac_valid(hash_hex: str, mac: str, keys: Sequence[bytes]) -> bool:
    """Whether `mac` is the MAC of the seal hash `hash_hex` under one of `keys`."""
    given = mac.encode("utf-8")  # bytes: whatever a forger stored, the comparison neither fails nor leaks
    return any(hmac.compare_digest(seal_mac(hash_hex, key).encode("ascii"), given) for key in keys)


# The audit entry the upgrade to keyed seals writes first (audit/migrations/0004): seals before it have no MAC.
SEALS_KEYED_EVENT = "ledger.seals_keyed"  # audit.events.LEDGER_SEALS_KEYED
MAC_MISSING = "no MAC: sealed without the seal key, after the ledger's seals became keyed"
MAC_UNVOUCHED = (
    f"no MAC, and no {SEALS_KEYED_EVENT} entry of an upgrade follows to vouch for it: sealed without the seal key"
)
MAC_NOT_OURS = (
    "MAC mismatch: not made with this gateway's seal key (forged, or sealed under a key no longer "
    "configured: see LEDGER_SEAL_KEY_FALLBACKS)"
)


def is_upgrade_entry(seal: Any) -> bool:
    if seal.table != "audit_auditentry":
        return False
    try:
        return json.loads(seal.content).get("event") == SEALS_KEYED_EVENT
    except (ValueError, AttributeError):
        return False


SEAL_TABLE = "audit_ledgerseal"
_SEAL_COLUMNS = ("seq", "table", "row_pk", "content", "prev_hash", "seal_hash", "mac")
# Constant SQL, quoted the same way on SQLite and PostgreSQL ("table" is a keyword).
_LAST_SEAL_SQL = 'SELECT "seq", "seal_hash" FROM "audit_ledgerseal" ORDER BY "seq" DESC LIMIT 1'
_INSERT_SEAL_SQL = (
    'INSERT INTO "audit_ledgerseal" ("seq", "table", "row_pk", "content", "prev_hash", "seal_hash", "mac") '
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
# Seals as they were written before the seal key existed (the migration that introduced seals).
_INSERT_UNKEYED_SEAL_SQL = (
    'INSERT INTO "audit_ledgerseal" ("seq", "table", "row_pk", "content", "prev_hash", "seal_hash") '
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def seal_rows(model: type[models.Model], pks: Sequence[Any], *, using: str, keyed: bool = True) -> list[Seal]:
    """Append one seal per row (rows just inserted, in this transaction, after `lock_ledger`) and return them.

    Plain SQL on the seal table (two statements), so a migration can call it with historical models;
    `keyed=False` writes seals without a MAC, for the migration that ran before the MAC column existed.
    """
    if not pks:
        return []
    model = model._meta.concrete_model or model  # a proxy's rows are its concrete model's rows
    contents = read_contents(model, pks, using)
    table = model._meta.db_table
    rows = []
    for pk in pks:
        key = pk_text(pk)
        if key not in contents:
            raise RuntimeError(f"{table} row {key} is not in the database: cannot seal it")
        rows.append((table, key, contents[key]))
    return _append_seals(rows, using, keyed=keyed)


def _append_seals(rows: list[tuple[str, str, str]], using: str, *, keyed: bool = True) -> list[Seal]:
    """Chain (table, row pk, content) after the last seal: one read, one insert for all of them."""
    if not rows:
        return []
    key = seal_keys()[0] if keyed else None
    with connections[using].cursor() as cursor:
        cursor.execute(_LAST_SEAL_SQL)
        last = cursor.fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        seals = []
        for table, row_pk, content in rows:
            hashed = seal_hash(Seal(seq=seq, table=table, row_pk=row_pk, content=content, prev_hash=prev_hash))
            mac = seal_mac(hashed, key) if key is not None else None
            seals.append(Seal(seq, table, row_pk, content, prev_hash, hashed, mac))
            seq, prev_hash = seq + 1, hashed
        columns = _SEAL_COLUMNS if keyed else _SEAL_COLUMNS[:-1]
        cursor.executemany(
            _INSERT_SEAL_SQL if keyed else _INSERT_UNKEYED_SEAL_SQL,
            [tuple(getattr(seal, c) for c in columns) for seal in seals],
        )
    return seals


# -- sealing a whole transaction at its end ------------------------------------------------------
_PENDING = "_ledger_seals_pending"  # on the connection wrapper (one per thread): rows to seal at the end


def seal_or_defer(model: type[models.Model], pks: Sequence[Any], *, using: str) -> None:
    """Seal rows just inserted now, or, inside a `sealed_at_commit` block, when the block ends."""
    pending = connections[using].__dict__.get(_PENDING)
    if pending is None:
        seal_rows(model, pks, using=using)
    else:
        concrete = model._meta.concrete_model or model
        pending.extend((concrete, pk) for pk in pks)


@contextmanager
def sealed_at_commit(*, using: str = DEFAULT_DB_ALIAS, durable: bool = False) -> Iterator[None]:
    """A transaction whose ledger rows are sealed together as it ends, still inside it.

    A busy writer (the order pipeline, the recorder) inserts many ledger rows per commit; sealing
    each as it is inserted costs a read-back, a read of the last seal and an insert per row. Here
    each table's rows are read back in one query and all the seals go in one statement, so rows
    and seals still commit together or not at all. Rows of a savepoint rolled back inside the block
    are no longer in the database and get no seal. Nested blocks leave the sealing to the outermost.
    """
    connection = connections[using]
    with transaction.atomic(using=using, durable=durable):
        if connection.__dict__.get(_PENDING) is not None:
            yield
            return
        pending: list[tuple[type[models.Model], Any]] = []
        connection.__dict__[_PENDING] = pending
        try:
            yield
            _seal_pending(pending, using)
        finally:
            connection.__dict__[_PENDING] = None


def _seal_pending(pending: list[tuple[type[models.Model], Any]], using: str) -> None:
    if not pending:
        return
    lock_ledger(using)
    by_model: dict[type[models.Model], dict[str, Any]] = {}
    for model, pk in pending:
        by_model.setdefault(model, {}).setdefault(pk_text(pk), pk)
    contents = {model: read_contents(model, list(pks.values()), using) for model, pks in by_model.items()}
    rows, seen = [], set()
    for model, pk in pending:
        key = pk_text(pk)
        if (model, key) in seen:  # a key reused after a rolled-back savepoint: one row, one seal
            continue
        seen.add((model, key))
        content = contents[model].get(key)
        if content is not None:  # None: inserted in a savepoint that was rolled back
            rows.append((model._meta.db_table, key, content))
    _append_seals(rows, using)


def verify_seal_chain(seals: Iterable[Any], keys: Sequence[bytes] | None = None) -> ChainBreak | None:
    """Walk seals in seq order from 1; the first gap, wrong `prev_hash`, wrong `seal_hash` or bad MAC, or None.

    Every seal needs a MAC made with one of `keys` (default: `seal_keys()`), except the seals of a
    ledger written before the seal key existed: those precede the `ledger.seals_keyed` audit entry
    that the upgrade wrote as its first keyed seal, whose hash chains over theirs. The break's
    `event` names the sealed row ("<table> pk=<pk>").
    """
    walk = SealChainWalk(keys)
    for seal in seals:
        broken = walk.feed(seal)
        if broken is not None:
            return broken
    return walk.end()


class SealChainWalk:
    """`verify_seal_chain` one seal at a time, so a walk can be spread over many short steps.

    `feed` each seal in seq order from 1: it returns the break that seal makes, if any. `end()` once
    the last seal was fed returns what only the end can tell (seals without a MAC that no upgrade
    entry vouched for), or None."""

    def __init__(self, keys: Sequence[bytes] | None = None) -> None:
        self.keys = seal_keys() if keys is None else keys
        self.expected_seq = 1
        self.expected_prev = GENESIS_HASH
        self.keyed_from: int | None = None
        self.first_unkeyed: ChainBreak | None = None  # the first seal without a MAC, while no keyed seal came yet

    def feed(self, seal: Any) -> ChainBreak | None:
        where = f"{seal.table} pk={seal.row_pk}"
        if seal.seq != self.expected_seq:
            return ChainBreak(seal.seq, where, f"gap: expected seq {self.expected_seq}, found {seal.seq}")
        if seal.prev_hash != self.expected_prev:
            return ChainBreak(seal.seq, where, "prev_hash mismatch: it is not the previous seal's hash")
        if seal_hash(seal) != seal.seal_hash:
            return ChainBreak(seal.seq, where, "hash mismatch: the seal was changed after it was written")
        if seal.mac is None:
            if self.keyed_from is not None:
                return ChainBreak(seal.seq, where, f"{MAC_MISSING} at seal seq {self.keyed_from}")
            self.first_unkeyed = self.first_unkeyed or ChainBreak(seal.seq, where, MAC_UNVOUCHED)
        elif not mac_valid(seal.seal_hash, seal.mac, self.keys):
            return ChainBreak(seal.seq, where, MAC_NOT_OURS)
        elif self.keyed_from is None:
            if self.first_unkeyed is not None and not is_upgrade_entry(seal):
                return self.first_unkeyed
            self.keyed_from = seal.seq
        self.expected_seq += 1
        self.expected_prev = seal.seal_hash
        return None

    def end(self) -> ChainBreak | None:
        return self.first_unkeyed if self.keyed_from is None else None
