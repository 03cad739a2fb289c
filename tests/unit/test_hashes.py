"""The two hashes the safety guarantees rest on: the idempotency hash of an order request, and the
audit log's entry hash. Each must change when any field it covers changes."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical_json, compute_hash, entry_payload, verify_chain
from orders.services import request_hash
from orders.types import OrderRequest

D = Decimal

# -- idempotency: every field of the body ------------------------------------------------------------
BASE = OrderRequest(
    symbol="ES",
    action="BUY",
    quantity=D("2"),
    order_type="STP_LMT",
    sec_type="FOP",
    exchange="CME",
    currency="USD",
    primary_exchange="GLOBEX",
    expiry="20260320",
    strike=D("5000"),
    right="C",
    multiplier="50",
    con_id=123,
    limit_price=D("10.25"),
    stop_price=D("10"),
    trail_amount=D("1"),
    trail_percent=D("2"),
    tif="GTC",
    outside_rth=False,
    account="DU1",
    client_order_id="key-1",
    take_profit=D("12"),
    stop_loss=D("9"),
)
# A different value for every field of the request (the key itself excepted).
CHANGED = {
    "symbol": "NQ",
    "action": "SELL",
    "quantity": D("3"),
    "order_type": "LMT",
    "sec_type": "FUT",
    "exchange": "CBOT",
    "currency": "EUR",
    "primary_exchange": "X",
    "expiry": "20260619",
    "strike": D("5001"),
    "right": "P",
    "multiplier": "5",
    "con_id": 124,
    "limit_price": D("10.50"),
    "stop_price": D("9.75"),
    "trail_amount": D("1.5"),
    "trail_percent": D("3"),
    "tif": "DAY",
    "outside_rth": True,
    "account": "DU2",
    "take_profit": D("13"),
    "stop_loss": D("8"),
}


def test_the_changes_cover_every_field_of_the_request():
    assert set(CHANGED) | {"client_order_id"} == {f.name for f in dataclasses.fields(OrderRequest)}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_changing_any_field_changes_the_idempotency_hash(name):
    assert request_hash(replace(BASE, **{name: CHANGED[name]})) != request_hash(BASE)


@pytest.mark.parametrize("name", ["strike", "con_id", "limit_price", "stop_price", "take_profit", "stop_loss"])
def test_leaving_out_an_optional_field_changes_the_idempotency_hash(name):
    assert request_hash(replace(BASE, **{name: None})) != request_hash(BASE)


def test_the_key_itself_is_not_part_of_the_hash():
    assert request_hash(replace(BASE, client_order_id="key-2")) == request_hash(BASE)


def test_equal_numbers_written_differently_hash_the_same():
    same = replace(BASE, quantity=D("2.000"), limit_price=D("10.250"), strike=D("5E+3"))
    assert request_hash(same) == request_hash(BASE)


def test_the_idempotency_hash_is_sha256_hex():
    digest = request_hash(BASE)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert request_hash(BASE) == digest


def test_the_canonical_request_is_plain_text_numbers_without_the_key():
    canonical = BASE.canonical()
    assert "client_order_id" not in canonical
    assert canonical["quantity"] == "2"
    assert canonical["strike"] == "5000"
    assert canonical["limit_price"] == "10.25"
    assert canonical["outside_rth"] is False
    assert canonical["con_id"] == 123


# -- the audit chain: every hashed field ---------------------------------------------------------
@dataclass
class Entry:
    seq: int
    created_at: datetime
    event: str
    actor_kind: str
    actor_label: str
    source: str
    correlation_id: str
    target_type: str
    target_id: str
    data: dict
    prev_hash: str
    entry_hash: str = ""


T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
AUDIT_CHANGED = {
    "seq": 2,
    "created_at": T0 + timedelta(microseconds=1),
    "event": "order.cancel_requested",
    "actor_kind": "user",
    "actor_label": "someone else",
    "source": "mcp",
    "correlation_id": "cid-2",
    "target_type": "fill",
    "target_id": "other",
    "data": {"quantity": "11"},
    "prev_hash": "f" * 64,
}


def entry(**fields) -> Entry:
    values = {
        "seq": 1,
        "created_at": T0,
        "event": "order.submitted",
        "actor_kind": "api_key",
        "actor_label": "bot (abcd)",
        "source": "rest",
        "correlation_id": "cid-1",
        "target_type": "order",
        "target_id": "o-1",
        "data": {"quantity": "10"},
        "prev_hash": GENESIS_HASH,
    }
    values.update(fields)
    made = Entry(**values)
    made.entry_hash = compute_hash(made)
    return made


def test_the_hashed_fields_are_every_field_but_the_hash_itself():
    assert set(HASHED_FIELDS) == set(AUDIT_CHANGED)
    assert set(entry_payload(entry())) == set(AUDIT_CHANGED)


@pytest.mark.parametrize("name", sorted(AUDIT_CHANGED))
def test_changing_any_hashed_field_changes_the_entry_hash(name):
    assert compute_hash(replace(entry(), **{name: AUDIT_CHANGED[name]})) != entry().entry_hash


def test_the_entry_hash_is_sha256_of_the_canonical_payload():
    import hashlib

    e = entry()
    assert e.entry_hash == hashlib.sha256(canonical_json(entry_payload(e)).encode("ascii")).hexdigest()


def chain(n: int) -> list[Entry]:
    entries, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        made = entry(seq=seq, prev_hash=prev, data={"n": seq})
        entries.append(made)
        prev = made.entry_hash
    return entries


def test_an_intact_chain_verifies():
    assert verify_chain(chain(3)) is None
    assert verify_chain([]) is None


@pytest.mark.parametrize("name", ["actor_label", "actor_kind", "source", "correlation_id", "data", "created_at"])
def test_a_changed_field_is_found_at_its_seq(name):
    entries = chain(3)
    entries[1] = replace(entries[1], **{name: AUDIT_CHANGED[name]})
    found = verify_chain(entries)
    assert found is not None
    assert found.seq == 2
    assert found.event == "order.submitted"
    assert found.reason == "hash mismatch: the entry was changed after it was written"
    assert str(found) == "seq 2 (order.submitted): hash mismatch: the entry was changed after it was written"


def test_a_rehashed_entry_breaks_the_next_link():
    entries = chain(3)
    forged = replace(entries[1], actor_label="someone else")
    forged.entry_hash = compute_hash(forged)
    entries[1] = forged
    found = verify_chain(entries)
    assert (found.seq, found.event, found.reason) == (
        3,
        "order.submitted",
        "prev_hash mismatch: it is not the previous entry's hash",
    )


def test_a_missing_entry_is_a_gap():
    entries = chain(3)
    del entries[1]
    found = verify_chain(entries)
    assert (found.seq, found.event, found.reason) == (3, "order.submitted", "gap: expected seq 2, found 3")


def test_a_chain_must_start_at_genesis():
    entries = chain(2)
    entries[0] = entry(seq=1, prev_hash="a" * 64)
    found = verify_chain(entries)
    assert (found.seq, found.reason) == (1, "prev_hash mismatch: it is not the previous entry's hash")


def test_canonical_json_is_byte_stable():
    value = {
        "b": D("1.50"),
        "a": [1.0, 2.5, uuid.UUID(int=1)],
        "t": datetime(2026, 3, 2, 16, 0, tzinfo=timezone(timedelta(hours=1))),
        "d": T0.date(),
        "u": "é",
        "n": {"x": 3.0},
    }
    assert canonical_json(value) == (
        '{"a":[1,2.5,"00000000-0000-0000-0000-000000000001"],"b":"1.50","d":"2026-03-02",'
        '"n":{"x":3},"t":"2026-03-02T15:00:00.000000+00:00","u":"\\u00e9"}'
    )


def test_canonical_json_refuses_what_it_cannot_hash_stably():
    with pytest.raises(ValueError) as excinfo:
        canonical_json({"t": datetime(2026, 3, 2)})
    assert str(excinfo.value) == "naive datetimes cannot be hashed: the audit log stores UTC"
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError, match="set is not canonically serialisable"):
        canonical_json({"x": {1}})


# -- contract specs: normalised and keyed once, the same answers as before -----------------------------
def test_a_spec_is_normalised_and_keyed_the_same_every_time_and_a_strike_keeps_its_digits():
    from brokers.adapter import ContractSpec
    from marketdata.services import _lookup_key, spec_normalize

    messy = ContractSpec(symbol=" aapl ", exchange="", currency="usd")
    assert (
        spec_normalize(messy) == spec_normalize(messy) == ContractSpec(symbol="AAPL", exchange="SMART", currency="USD")
    )
    assert _lookup_key(spec_normalize(messy)) == _lookup_key(
        ContractSpec(symbol="AAPL", exchange="SMART", currency="USD")
    )
    assert spec_normalize(ContractSpec(symbol="eur.usd", sec_type="cash")).currency == "USD"
    # Equal strikes written differently are different lookups (as they always were), remembered or not.
    tenths = ContractSpec(symbol="AAPL", sec_type="OPT", strike=Decimal("190.0"))
    hundredths = ContractSpec(symbol="AAPL", sec_type="OPT", strike=Decimal("190.00"))
    assert str(spec_normalize(tenths).strike) == "190.0" and str(spec_normalize(hundredths).strike) == "190.00"
    assert _lookup_key(tenths) != _lookup_key(hundredths)
