"""The order state machine: every pair of states, allowed or refused, and IB's statuses mapped onto ours."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders.models import OrderStatus as S
from orders.state import TERMINAL, WORKING, can_transition, from_ib

# What the broker may report about an order it has.
BROKER = {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.INACTIVE, S.REJECTED}

# The specification, written out state by state (not derived from the code under test).
ALLOWED = {
    S.PENDING_APPROVAL: {S.PENDING_SUBMIT, S.SIMULATED, S.REJECTED, S.EXPIRED, S.CANCELLED},
    S.PENDING_SUBMIT: BROKER | {S.UNKNOWN},
    S.UNKNOWN: BROKER,
    S.SUBMITTED: BROKER,
    S.PARTIALLY_FILLED: {S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.INACTIVE, S.SUBMITTED},
    S.CANCEL_PENDING: {S.CANCELLED, S.FILLED, S.PARTIALLY_FILLED, S.SUBMITTED, S.CANCEL_PENDING, S.INACTIVE},
    S.INACTIVE: {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.CANCEL_PENDING, S.INACTIVE, S.REJECTED},
    S.FILLED: set(),
    S.CANCELLED: set(),
    S.REJECTED: set(),
    S.EXPIRED: set(),
    S.SIMULATED: set(),
}
PAIRS = [(current, new) for current in S for new in S]


def test_the_specification_names_every_state():
    assert set(ALLOWED) == set(S)


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{c}->{n}" for c, n in PAIRS])
def test_every_transition_is_allowed_or_refused_as_specified(current, new):
    assert can_transition(current, new) is (new in ALLOWED[current])


def test_an_unknown_state_goes_nowhere():
    assert can_transition("made_up", S.SUBMITTED) is False


def test_terminal_states_are_exactly_those_that_go_nowhere():
    assert {S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.SIMULATED} == TERMINAL
    assert {s for s in S if not ALLOWED[s]} == TERMINAL


def test_working_states_are_those_the_broker_may_still_act_on():
    expected = {S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING, S.INACTIVE, S.UNKNOWN, S.PENDING_SUBMIT}
    assert expected == WORKING
    assert not WORKING & TERMINAL
    assert S.PENDING_APPROVAL not in WORKING


def test_a_filled_order_never_goes_back_to_working():
    for new in S:
        assert not can_transition(S.FILLED, new)


def test_a_held_order_cannot_skip_approval_to_the_broker():
    for reported in BROKER - {S.REJECTED, S.CANCELLED}:
        assert not can_transition(S.PENDING_APPROVAL, reported)


# -- IB statuses ------------------------------------------------------------------------------------
Z = Decimal(0)


@pytest.mark.parametrize(
    ("status", "filled", "remaining", "expected"),
    [
        ("Filled", Decimal(10), Z, S.FILLED),
        ("Filled", Z, None, S.FILLED),
        ("Submitted", Decimal(10), Z, S.FILLED),  # nothing left: filled whatever the word says
        ("PreSubmitted", Decimal(1), Z, S.FILLED),
        ("Submitted", Z, Z, S.SUBMITTED),  # remaining 0 without a fill is not a fill
        ("Submitted", Decimal(4), Decimal(6), S.PARTIALLY_FILLED),
        ("Submitted", Decimal(4), None, S.PARTIALLY_FILLED),
        ("Submitted", Decimal(1), Decimal(9), S.PARTIALLY_FILLED),  # the first share counts
        ("Submitted", Decimal("0.5"), Decimal("9.5"), S.PARTIALLY_FILLED),
        ("Submitted", Z, Decimal(10), S.SUBMITTED),
        ("PreSubmitted", Z, Decimal(10), S.SUBMITTED),
        ("PendingSubmit", Z, Decimal(10), S.SUBMITTED),
        ("PreSubmitted", Decimal(3), Decimal(7), S.PARTIALLY_FILLED),
        ("PendingSubmit", Decimal(3), Decimal(7), S.PARTIALLY_FILLED),
        ("Cancelled", Z, Decimal(10), S.CANCELLED),
        ("Cancelled", Decimal(3), Decimal(7), S.CANCELLED),
        ("ApiCancelled", Z, Decimal(10), S.CANCELLED),
        ("PendingCancel", Z, Decimal(10), S.CANCEL_PENDING),
        ("Inactive", Z, Decimal(10), S.INACTIVE),
        ("ApiPending", Z, Decimal(10), None),
        ("", Z, None, None),
    ],
)
def test_ib_statuses_map_onto_ours(status, filled, remaining, expected):
    assert from_ib(status, filled=filled, remaining=remaining) == expected


@pytest.mark.parametrize(
    ("status", "error_code", "expected"),
    [
        ("Inactive", 201, S.REJECTED),  # IB's "Order rejected": final
        ("Cancelled", 201, S.REJECTED),  # the same rejection, reported first (ib_async marks the order Cancelled)
        ("Inactive", 399, S.INACTIVE),  # another error: IB may still work the order
        ("Cancelled", 202, S.CANCELLED),
        ("Submitted", 201, S.SUBMITTED),  # working after all: the error stopped nothing
    ],
)
def test_ib_s_rejection_makes_a_stopped_order_rejected(status, error_code, expected):
    assert from_ib(status, filled=Z, remaining=Decimal(10), error_code=error_code) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Cancelled", S.REJECTED),  # ib_async marks a new order Cancelled on IB's error: IB refused it
        ("Inactive", S.REJECTED),
        ("ApiCancelled", S.REJECTED),
        ("Submitted", S.SUBMITTED),  # working after all: the error stopped nothing
        ("Filled", S.FILLED),
    ],
)
def test_an_error_that_stopped_a_new_order_makes_it_rejected(status, expected):
    assert from_ib(status, filled=Z, remaining=Decimal(10), error_code=203, refused=True) == expected
    if expected == S.REJECTED:  # the same stop of an order that had worked is the broker's cancel or hold
        assert from_ib(status, filled=Z, remaining=Decimal(10), error_code=203) != S.REJECTED
