"""The kill switch trusts only its newest sealed row: a halt cannot be released by editing the database.

Someone with write access to the database file could otherwise resume trading with one INSERT of a
row saying "resumed" (with or without a seal computed the way the application computes it), or by
deleting or rewriting the halt row. `audit_verify` names each of these, but the running gateway must
not act on them meanwhile: the switch stays halted (and says why) until an admin resumes, which
writes a new sealed row. Only a seal whose MAC was made with the seal key counts.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from ibkrgw.actors import Actor, ActorKind, Source
from orders import services
from orders.models import TradingSwitchEvent
from orders.selectors import trading_halted, trading_switch_latest, trading_switch_state
from tests.audit.test_ledger_seal import append_plain_seal, drop_trigger, raw, rewrite_around_triggers, verify
from tests.conftest import wait_for
from tests.factories import TradingSwitchEventFactory

ADMIN = Actor(kind=ActorKind.USER, label="admin", source=Source.ADMIN, is_admin=True)
OTHER_KEY = b"a key that is not this gateway's seal key"


def forge_resume() -> int:
    """A row saying "resumed by admin", inserted with raw SQL (INSERT is what the triggers allow)."""
    raw(
        "INSERT INTO orders_tradingswitchevent (halted, reason, actor_kind, actor_label, source, correlation_id, at) "
        "VALUES (%s, 'all clear', 'user', 'admin', 'admin', 'forged', %s)",
        [False, timezone.now()],
    )
    return TradingSwitchEvent.objects.order_by("-id").values_list("pk", flat=True)[0]


def forge_resume_with_seal(key: bytes | None = None) -> int:
    """A forged "resumed" row and a seal for it chained after the head, hashed as the application does
    (the attack a keyless chain let through), with no MAC or one made with `key`."""
    pk = forge_resume()
    append_plain_seal(TradingSwitchEvent, pk, key=key)
    return pk


def release_by_rewriting(halt: TradingSwitchEvent) -> None:
    rewrite_around_triggers("orders_tradingswitchevent", halt.pk, "halted", False)


def release_by_deleting(halt: TradingSwitchEvent) -> None:
    drop_trigger("orders_tradingswitchevent", "delete")
    raw("DELETE FROM orders_tradingswitchevent WHERE id = %s", [halt.pk])


def release_by_deleting_with_its_seal(halt: TradingSwitchEvent) -> None:
    """The halt row and its seal deleted: the seal chain is shorter but valid, its newest row the older resume."""
    for table in ("orders_tradingswitchevent", "audit_ledgerseal"):
        drop_trigger(table, "delete")
    raw("DELETE FROM audit_ledgerseal WHERE \"table\" = 'orders_tradingswitchevent' AND row_pk = %s", [str(halt.pk)])
    raw("DELETE FROM orders_tradingswitchevent WHERE id = %s", [halt.pk])


def release_by_deleting_every_row_and_seal(halt: TradingSwitchEvent) -> None:
    for table in ("orders_tradingswitchevent", "audit_ledgerseal"):
        drop_trigger(table, "delete")
    raw("DELETE FROM audit_ledgerseal WHERE \"table\" = 'orders_tradingswitchevent'")
    raw("DELETE FROM orders_tradingswitchevent")


def release_by_deleting_every_row(halt: TradingSwitchEvent) -> None:
    drop_trigger("orders_tradingswitchevent", "delete")
    raw("DELETE FROM orders_tradingswitchevent")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        (lambda halt: forge_resume(), "is not the one sealed last"),
        (lambda halt: forge_resume_with_seal(), "has a seal without a MAC"),
        (lambda halt: forge_resume_with_seal(key=OTHER_KEY), "not made with this gateway's seal key"),
        (release_by_rewriting, "differs from its seal"),
        (release_by_deleting, "is not the one sealed last"),
        (release_by_deleting_every_row, "rows are gone"),
        (release_by_deleting_with_its_seal, "went back from seal"),
        (release_by_deleting_every_row_and_seal, "its seals are gone"),
    ],
    ids=[
        "forged-resume-row",
        "forged-resume-row-with-a-plain-seal",
        "forged-resume-row-sealed-under-another-key",
        "halt-row-rewritten",
        "halt-row-deleted",
        "every-row-deleted",
        "halt-row-deleted-with-its-seal",
        "every-row-deleted-with-its-seal",
    ],
)
def test_a_halt_released_behind_the_applications_back_still_holds(tamper, found):
    TradingSwitchEventFactory(halted=False)  # an earlier resume, sealed: deleting the halt leaves it newest
    halt = TradingSwitchEventFactory(halted=True)
    assert trading_halted() is True
    tamper(halt)
    latest = TradingSwitchEvent.objects.order_by("-id").first()
    assert latest is None or latest.halted is False  # what the rows alone now say
    state = trading_switch_state()
    assert state.halted is True
    assert found in state.untrusted
    assert verify()[0] == 1  # and the ledger check names it
    # An admin's resume is a new sealed row: trusted again.
    services.trading_resume(actor=ADMIN, reason="checked")
    state = trading_switch_state()
    assert (state.halted, state.untrusted) == (False, "")


@pytest.mark.django_db
def test_a_switch_row_rewritten_into_a_value_that_cannot_be_read_holds_trading_halted():
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL checks the type of every value it stores")
    resumed = TradingSwitchEventFactory(halted=False)
    rewrite_around_triggers("orders_tradingswitchevent", resumed.pk, "at", "2026-13-45 99:00:00")
    state = trading_switch_state()
    assert state.halted is True
    assert "holds a value that cannot be read" in state.untrusted
    assert trading_switch_latest() is None  # what the console and the MCP status show of it: no row, halted
    code, out = verify()
    assert code == 1 and f"orders_tradingswitchevent pk={resumed.pk}: row changed" in out
    services.trading_resume(actor=ADMIN, reason="checked")
    assert trading_switch_state().halted is False


@pytest.mark.django_db
def test_the_switch_follows_its_sealed_rows_and_starts_released():
    assert trading_switch_state().halted is False  # a new ledger: never halted
    TradingSwitchEventFactory(halted=True)
    assert trading_switch_state().halted is True
    TradingSwitchEventFactory(halted=False)
    state = trading_switch_state()
    assert (state.halted, state.untrusted) == (False, "")


@pytest.mark.django_db
def test_a_forged_halt_row_halts_too():
    # Tampering toward safety is still tampering: halted, and audit_verify says why.
    raw(
        "INSERT INTO orders_tradingswitchevent (halted, reason, actor_kind, actor_label, source, correlation_id, at) "
        "VALUES (%s, '', 'user', 'x', 'admin', 'forged', %s)",
        [True, timezone.now()],
    )
    assert trading_halted() is True
    assert "not the one sealed last" in trading_switch_state().untrusted


def test_a_forged_resume_row_lets_no_order_through_the_running_gateway(ib_runtime, api_client, sim_gateway, settings):
    settings.ORDERS_ENABLED = True
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("190.00"))
    services.trading_halt(actor=ADMIN, reason="incident")
    forge_resume()
    # The sweep (every second in production) sets the broker connection's latch from the switch.
    services.trading_halt_sweep()
    assert ib_runtime.worker.sends_blocked is True
    order = {
        "client_order_id": "after-forgery",
        "symbol": "AAPL",
        "action": "BUY",
        "quantity": "1",
        "order_type": "MKT",
    }
    blocked = api_client.post("/api/v1/orders/", order, format="json")
    assert blocked.status_code == 423
    assert blocked.json()["error"]["code"] == "trading_halted"
    health = api_client.get("/api/v1/health/").json()
    assert health["trading_halted"] is True
    assert "kill switch ledger tampered with" in health["halt"]["error"]
    # Without credentials: halted, and the sweep's progress; not the finding's words.
    public = APIClient().get("/api/v1/health/").json()
    assert public["trading_halted"] is True and public["halt"]["state"] in ("cancelling", "done")
    assert "error" not in public["halt"] and "tampered" not in json.dumps(public)
    assert [o.order_ref for o in sim_gateway.received_orders() if not o.what_if] == []
    services.trading_resume(actor=ADMIN, reason="checked the database")
    wait_for(lambda: not ib_runtime.worker.sends_blocked, message="the latch opened by the resume")
    assert api_client.post("/api/v1/orders/", order, format="json").status_code == 201
