"""The one registry of audit event names."""

from __future__ import annotations

import pytest

from audit import events

REQUIRED = [
    "order.submitted",
    "order.simulated",
    "order.sent",
    "order.status_changed",
    "order.rejected",
    "order.cancel_requested",
    "order.modified",
    "order.modification_unconfirmed",
    "order.unknown",
    "order.approved",
    "order.approval_rejected",
    "order.expired",
    "fill.recorded",
    "commission.recorded",
    "gate.blocked",
    "trading.halted",
    "trading.resumed",
    "broker.connected",
    "broker.disconnected",
    "broker.reconciled",
    "apikey.created",
    "apikey.revoked",
    "settings.loaded",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_every_documented_event_is_registered_with_a_description(name):
    assert events.is_registered(name)
    assert events.REGISTRY[name]


def test_constants_are_the_registered_names():
    assert events.ORDER_SUBMITTED == "order.submitted"
    assert events.GATE_BLOCKED == "gate.blocked"


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        events.register("order.submitted", "again")


@pytest.mark.parametrize("name", ["ordersubmitted", "Order.Submitted", ".submitted", "order."])
def test_badly_shaped_names_are_refused(name):
    with pytest.raises(ValueError, match="entity"):
        events.register(name, "bad")


def test_the_registry_cannot_be_changed_from_outside():
    with pytest.raises(TypeError):
        events.REGISTRY["x.y"] = "nope"  # type: ignore[index]
