"""The hash chain and `manage.py audit_verify`: intact logs pass, any change is found and named."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit import events
from audit.chain import GENESIS_HASH, canonical_json, compute_hash, verify_chain
from audit.models import AuditEntry
from tests.factories import audit_entry


def _write_entries(n: int) -> list[AuditEntry]:
    return [
        audit_entry(event=events.ORDER_STATUS_CHANGED, target_id=str(i), data={"i": i, "price": Decimal("1.10")})
        for i in range(n)
    ]


def _verify() -> str:
    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_canonical_json_is_sorted_compact_and_stringifies_decimals_uuids_and_utc_datetimes():
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    value = {"b": Decimal("1.50"), "a": uuid.UUID(int=1), "t": moment, "s": "é"}
    assert canonical_json(value) == (
        '{"a":"00000000-0000-0000-0000-000000000001","b":"1.50","s":"\\u00e9","t":"2025-01-02T01:04:05.000000+00:00"}'
    )


def test_canonical_json_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="naive"):
        canonical_json({"t": datetime(2025, 1, 1)})


@pytest.mark.django_db
def test_entries_link_to_their_predecessor_starting_from_genesis():
    first, second, third = _write_entries(3)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert second.prev_hash == first.entry_hash
    assert third.prev_hash == second.entry_hash
    # The stored row hashes to the same value as the one computed before insert.
    assert compute_hash(AuditEntry.objects.get(pk=third.seq)) == third.entry_hash


@pytest.mark.django_db
def test_an_intact_chain_verifies_and_audit_verify_exits_zero():
    _write_entries(5)
    assert verify_chain(AuditEntry.objects.order_by("seq")) is None
    assert "OK" in _verify() and "5 entries" in _verify()


@pytest.mark.django_db
def test_an_empty_log_verifies():
    assert "0 entries" in _verify()


@pytest.mark.django_db
def test_audit_verify_names_the_seq_whose_data_was_altered(ledger_triggers_dropped):
    entries = _write_entries(5)
    _raw("UPDATE audit_auditentry SET data = %s WHERE seq = %s", ['{"i": 999}', entries[2].seq])
    with pytest.raises(CommandError, match=rf"seq {entries[2].seq} .*hash mismatch") as excinfo:
        _verify()
    assert excinfo.value.returncode == 1


@pytest.mark.django_db
def test_rehashing_an_altered_entry_breaks_the_next_link(ledger_triggers_dropped):
    entries = _write_entries(4)
    forged = AuditEntry.objects.get(pk=entries[1].seq)
    forged.data = {"i": 999}
    forged.entry_hash = compute_hash(forged)
    _raw(
        "UPDATE audit_auditentry SET data = %s, entry_hash = %s WHERE seq = %s",
        ['{"i": 999}', forged.entry_hash, forged.seq],
    )
    broken = verify_chain(AuditEntry.objects.order_by("seq"))
    assert broken is not None
    assert (broken.seq, broken.reason.split(":")[0]) == (entries[2].seq, "prev_hash mismatch")


@pytest.mark.django_db
def test_a_deleted_entry_is_reported_as_a_gap(ledger_triggers_dropped):
    entries = _write_entries(4)
    _raw("DELETE FROM audit_auditentry WHERE seq = %s", [entries[1].seq])
    with pytest.raises(CommandError, match=rf"seq {entries[2].seq} .*gap") as excinfo:
        _verify()
    assert excinfo.value.returncode == 1


@pytest.mark.django_db
def test_verification_streams_in_chunks():
    _write_entries(7)
    assert "7 entries" in _verify_chunked(2)


def _verify_chunked(size: int) -> str:
    out = StringIO()
    call_command("audit_verify", "--chunk-size", str(size), stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_created_at_is_utc_aware():
    entry = audit_entry()
    assert AuditEntry.objects.get(pk=entry.seq).created_at.utcoffset() == timedelta(0)
    assert entry.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - entry.created_at) < timedelta(minutes=1)


@pytest.mark.django_db
def test_numbers_hash_the_same_after_the_database_round_trip():
    entry = audit_entry(data={"big": 1e16, "one": 1.0, "small": 1.5e-10, "n": 7, "flag": True, "none": None})
    stored = AuditEntry.objects.get(pk=entry.seq)
    assert compute_hash(stored) == entry.entry_hash
