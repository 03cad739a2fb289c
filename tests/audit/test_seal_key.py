"""Keyed seals: a row forged together with a seal needs the seal key, which is kept outside the database.

Without a key, anyone who can write the database can append a row and a seal hashed exactly as the
application hashes it, and the chain stays intact. Each seal's MAC (HMAC-SHA256 of its hash under
the seal key) is what such a forger cannot compute: `audit_verify` names the seal, whatever MAC it
carries, and the kill switch does not trust it (tests/audit/test_kill_switch_tamper.py).
"""

from __future__ import annotations

import pytest

from audit import events
from audit.checks import check_ledger_seal_key
from audit.models import LedgerSeal
from audit.seal import SEALS_KEYED_EVENT
from orders.models import Fill
from orders.selectors import trading_switch_state
from tests.audit.test_kill_switch_tamper import forge_resume_with_seal
from tests.audit.test_ledger_seal import append_plain_seal, forge_fill, small_ledger, verify
from tests.factories import TradingSwitchEventFactory

OLD_KEY = "an-earlier-seal-key-0123456789abcdef"
NEW_KEY = "the-current-seal-key-0123456789abcdef"


@pytest.mark.django_db
def test_a_row_appended_with_a_seal_hashed_the_plain_way_is_named():
    rows = small_ledger()
    forged = forge_fill(rows["order"], rows["fill"])
    seq = append_plain_seal(Fill, forged)
    code, out = verify()
    assert code == 1
    assert (
        f"seal chain BROKEN at seal seq {seq} (orders_fill pk={forged}): no MAC: sealed without the seal key, "
        "after the ledger's seals became keyed at seal seq 1" in out
    )
    assert "row has no seal" not in out  # the seal does match the row: only its missing MAC gives it away


@pytest.mark.django_db
@pytest.mark.parametrize(
    "forged_mac",
    [{"key": b"a key that is not this gateway's seal key"}, {"mac": "0" * 64}, {"mac": "not a MAC \u00e9"}],
    ids=["another-key", "zeros", "not-hex"],
)
def test_a_seal_whose_mac_was_not_made_with_the_seal_key_is_named(forged_mac):
    rows = small_ledger()
    forged = forge_fill(rows["order"], rows["fill"])
    seq = append_plain_seal(Fill, forged, **forged_mac)
    code, out = verify()
    assert code == 1
    assert (
        f"seal chain BROKEN at seal seq {seq} (orders_fill pk={forged}): "
        "MAC mismatch: not made with this gateway's seal key" in out
    )


@pytest.mark.django_db
def test_seals_made_under_an_earlier_key_verify_while_it_is_a_fallback(settings):
    settings.LEDGER_SEAL_KEY = OLD_KEY
    small_ledger()
    settings.LEDGER_SEAL_KEY = NEW_KEY
    code, out = verify()
    assert code == 1
    assert "seal chain BROKEN at seal seq 1 (orders_order pk=" in out
    assert "MAC mismatch: not made with this gateway's seal key" in out
    # The kill switch's newest row was sealed under the old key too: halted until it is accepted again.
    assert "not made with this gateway's seal key" in trading_switch_state().untrusted

    settings.LEDGER_SEAL_KEY_FALLBACKS = [OLD_KEY]
    TradingSwitchEventFactory(halted=False)  # sealed under the new key, after the old ones
    code, out = verify()
    assert code == 0, out
    assert trading_switch_state().untrusted == ""
    assert LedgerSeal.objects.order_by("-seq").first().mac not in (None, "")


@pytest.mark.django_db
def test_without_a_seal_key_rotating_secret_key_needs_the_old_one_as_a_fallback(settings):
    settings.LEDGER_SEAL_KEY = None
    old_secret = settings.SECRET_KEY
    small_ledger()
    assert verify()[0] == 0
    settings.SECRET_KEY = "a-rotated-secret-key-0123456789abcdef"
    code, out = verify()
    assert code == 1 and "MAC mismatch: not made with this gateway's seal key" in out
    settings.SECRET_KEY_FALLBACKS = [old_secret]
    assert verify()[0] == 0
    # Moving to a seal key of its own: the old SECRET_KEY becomes one of its fallbacks.
    settings.SECRET_KEY_FALLBACKS = []
    settings.LEDGER_SEAL_KEY = NEW_KEY
    settings.LEDGER_SEAL_KEY_FALLBACKS = [old_secret]
    assert verify()[0] == 0


@pytest.mark.django_db
def test_a_new_ledger_accepts_no_seal_without_a_mac():
    # Seals without a MAC pass only before the keyed entry of an upgrade: here nothing vouches for this one.
    forged = forge_resume_with_seal()
    assert "has a seal without a MAC" in trading_switch_state().untrusted
    code, out = verify()
    assert code == 1
    assert (
        f"seal chain BROKEN at seal seq 1 (orders_tradingswitchevent pk={forged}): no MAC, and no "
        "ledger.seals_keyed entry of an upgrade follows to vouch for it" in out
    )
    # The application's keyed seals that follow do not vouch for it either.
    TradingSwitchEventFactory(halted=True)
    code, out = verify()
    assert code == 1
    assert f"seal chain BROKEN at seal seq 1 (orders_tradingswitchevent pk={forged}): no MAC" in out


def test_a_live_gateway_without_its_own_seal_key_is_warned(settings):
    settings.TRADING_MODE = "live"
    settings.DEBUG = False
    settings.LEDGER_SEAL_KEY = None
    [warning] = check_ledger_seal_key()
    assert warning.id == "audit.W001"
    assert "rotating SECRET_KEY" in warning.msg
    settings.LEDGER_SEAL_KEY = NEW_KEY
    assert check_ledger_seal_key() == []
    settings.LEDGER_SEAL_KEY = None
    settings.TRADING_MODE = "paper"
    assert check_ledger_seal_key() == []


def test_the_upgrade_entry_is_a_registered_event():
    assert events.LEDGER_SEALS_KEYED == SEALS_KEYED_EVENT
