"""The IB worker's memory of IB's errors on its orders: which are reasons for a stop, and how much is kept."""

from __future__ import annotations

import pytest

from brokers.ib.errors import ORDER_ERRORS_MAX, OrderError, OrderErrors

REJECTED = "Order rejected - reason:The order is not accepted."


def test_an_error_on_an_order_is_its_reason():
    errors = OrderErrors()
    assert errors.note(7, 201, REJECTED, new_order=True)
    assert errors.of(7) == OrderError(201, REJECTED, refused=True)
    assert errors.of(8) is None
    assert errors.note(7, 10148, "OrderId 7 that needs to be cancelled cannot be cancelled.", new_order=False)
    # The latest; on an order the broker had reported working, it refused nothing.
    assert errors.of(7) == OrderError(10148, "OrderId 7 that needs to be cancelled cannot be cancelled.", refused=False)


@pytest.mark.parametrize(("code", "refused"), [(201, True), (203, True), (103, True), (202, False)])
def test_an_error_stopping_a_new_order_refused_it_unless_it_is_ib_s_cancel(code, refused):
    errors = OrderErrors()
    assert errors.note(7, code, "an error", new_order=True)
    assert errors.of(7) == OrderError(code, "an error", refused=refused)


@pytest.mark.parametrize("code", [105, 110, 165, 321, 329, 399, 404, 434, 492, 10167, 2100, 2109, 2199])
def test_warnings_are_no_reason_to_stop_an_order(code):
    errors = OrderErrors()
    assert not errors.note(7, code, "a warning", new_order=False)
    assert errors.of(7) is None


@pytest.mark.parametrize("code", [200, 201, 202, 2200, 10147])
def test_errors_outside_the_warnings_are_reasons(code):
    assert OrderErrors().note(7, code, "an error", new_order=False)


def test_a_price_off_the_tick_rejects_a_new_order_and_only_warns_about_a_working_one():
    errors = OrderErrors()
    assert not errors.note(7, 110, "The price does not conform to the minimum price variation.", new_order=False)
    assert errors.note(8, 110, "The price does not conform to the minimum price variation.", new_order=True)
    text = "The price does not conform to the minimum price variation."
    assert (errors.of(7), errors.of(8)) == (None, OrderError(110, text, refused=True))


def test_ib_s_confirmation_of_our_own_cancel_is_no_reason_but_its_own_cancel_is():
    errors = OrderErrors()
    errors.own_cancel(7)
    assert not errors.note(7, 202, "Order Canceled - reason:", new_order=False)
    assert errors.note(8, 202, "Order Canceled - reason:IOC order remainder cancelled", new_order=False)
    ioc = "Order Canceled - reason:IOC order remainder cancelled"
    assert (errors.of(7), errors.of(8)) == (None, OrderError(202, ioc, refused=False))


def test_ib_finding_the_order_of_our_cancel_already_done_is_no_reason_but_on_another_order_it_is():
    """A cancel meeting a fill, or two cancels crossing: IB answers 10148, and the order's status says the rest."""
    done = "OrderId 7 that needs to be cancelled cannot be cancelled, state: Cancelled."
    errors = OrderErrors()
    errors.own_cancel(7)
    assert not errors.note(7, 10148, done, new_order=False)
    assert errors.note(8, 10148, done.replace("7", "8"), new_order=False)
    assert (errors.of(7), errors.of(8)) == (None, OrderError(10148, done.replace("7", "8"), refused=False))


def test_an_earlier_error_explains_neither_our_cancel_nor_a_stop_after_the_order_worked_again():
    errors = OrderErrors()
    errors.note(7, 201, "Order rejected - reason:The modification is not accepted.", new_order=False)
    errors.note(8, 201, "Order rejected - reason:The modification is not accepted.", new_order=False)
    errors.own_cancel(7)
    errors.working(8)
    assert (errors.of(7), errors.of(8), len(errors)) == (None, None, 0)


def test_the_memory_keeps_the_newest_orders_only():
    errors = OrderErrors(max_orders=3)
    for order_id in range(1, 5):
        errors.note(order_id, 201, f"rejected {order_id}", new_order=True)
    assert len(errors) == 3
    kept = [OrderError(201, f"rejected {i}", refused=True) for i in (2, 3, 4)]
    assert [errors.of(order_id) for order_id in range(1, 5)] == [None, *kept]
    errors.note(2, 201, "rejected 2 again", new_order=True)  # noted again: the newest
    errors.note(5, 201, "rejected 5", new_order=True)
    assert (errors.of(2), errors.of(3)) == (OrderError(201, "rejected 2 again", refused=True), None)
    assert OrderErrors().max_orders == ORDER_ERRORS_MAX


def test_the_memory_of_our_cancels_is_bounded_too():
    errors = OrderErrors(max_orders=2)
    for order_id in (1, 2, 3):
        errors.own_cancel(order_id)
    assert errors.note(1, 202, "Order Canceled - reason:", new_order=False)  # forgotten: taken as IB's cancel
    assert not errors.note(3, 202, "Order Canceled - reason:", new_order=False)


def test_a_new_connection_forgets_everything():
    errors = OrderErrors()
    errors.note(7, 201, REJECTED, new_order=True)
    errors.own_cancel(8)
    errors.clear()
    assert (errors.of(7), len(errors)) == (None, 0)
    assert errors.note(8, 202, "Order Canceled - reason:", new_order=False)
