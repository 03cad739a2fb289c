"""The audit log's SHA-256 hash chain: canonical JSON, entry hashes, verification.

Each entry's `entry_hash` is `sha256(canonical_json(fields))` over `HASHED_FIELDS`, and that
includes `prev_hash`, the previous entry's hash (`GENESIS_HASH` for seq 1). Changing, removing
or re-ordering any entry therefore breaks the chain at that point. (Deleting the *newest* entries
leaves a valid, shorter chain: compare the count with what you expect.)

Canonical JSON: keys sorted, no whitespace, ASCII only; `Decimal`, `UUID` as `str()`; datetimes
converted to UTC and written as ISO 8601 with microseconds; floats with an integral value as
integers (so the hash survives a jsonb round trip). This module works on any object with
the fields as attributes, so it never imports the models.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "seq",
    "created_at",
    "event",
    "actor_kind",
    "actor_label",
    "source",
    "correlation_id",
    "target_type",
    "target_id",
    "data",
    "prev_hash",
)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes cannot be hashed: the audit log stores UTC")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not canonically serialisable")


# Values left as they are, told apart by exact type: every ledger write hashes a few dozen of them.
_AS_IS = frozenset({str, int, bool, type(None)})


def _integral_floats_as_ints(value: Any) -> Any:
    # PostgreSQL's jsonb gives 1e16 back as the integer 10000000000000000: hash both the same way.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: item if type(item) in _AS_IS else _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [item if type(item) in _AS_IS else _integral_floats_as_ints(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """The one byte-stable JSON form of `value` (see the module docstring). NaN and infinity raise ValueError."""
    return json.dumps(
        _integral_floats_as_ints(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
        default=_default,
    )


def entry_payload(entry: Any) -> dict[str, Any]:
    """The hashed fields of `entry` (a model instance or anything with those attributes)."""
    return {name: getattr(entry, name) for name in HASHED_FIELDS}


def compute_hash(entry: Any) -> str:
    return hashlib.sha256(canonical_json(entry_payload(entry)).encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link: the entry at `seq` is not what the chain says it should be."""

    seq: int
    event: str
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq} ({self.event}): {self.reason}"


def verify_chain(entries: Iterable[Any]) -> ChainBreak | None:
    """Walk `entries` (in seq order, starting at seq 1) and return the first break, or None.

    Checks, in order, for each entry: its seq follows the previous one (a gap means deleted or
    missing rows), its `prev_hash` is the previous entry's hash, and its `entry_hash` matches the
    recomputed hash of its fields. Consumes the iterable once, so a chunked `.iterator()` works.
    """
    expected_seq = 1
    expected_prev = GENESIS_HASH
    for entry in entries:
        if entry.seq != expected_seq:
            return ChainBreak(entry.seq, entry.event, f"gap: expected seq {expected_seq}, found {entry.seq}")
        if entry.prev_hash != expected_prev:
            return ChainBreak(entry.seq, entry.event, "prev_hash mismatch: it is not the previous entry's hash")
        if compute_hash(entry) != entry.entry_hash:
            return ChainBreak(entry.seq, entry.event, "hash mismatch: the entry was changed after it was written")
        expected_seq += 1
        expected_prev = entry.entry_hash
    return None
