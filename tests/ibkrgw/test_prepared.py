"""A read compiled once answers exactly what its queryset answers, for every value it is run with."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ibkrgw.prepared import PreparedRead
from orders.models import Fill, Order, OrderEvent
from tests.factories import FillFactory, OrderEventFactory, OrderFactory

pytestmark = pytest.mark.django_db

EVENTS_OF = PreparedRead(
    lambda order_id: OrderEvent.objects.filter(order_id=order_id).order_by("-id"),
    params=[(Order._meta.pk, uuid.UUID(int=1))],
)
KEYS_OF = PreparedRead(
    lambda account, symbol: (
        Order.objects.filter(account=account, symbol=symbol)
        .order_by("client_order_id")
        .values_list("client_order_id", flat=True)
    ),
    params=[(Order._meta.get_field("account"), "\x00account"), (Order._meta.get_field("symbol"), "\x00symbol")],
)
FILL_TERMS = PreparedRead(
    lambda exec_id: Fill.objects.filter(exec_id=exec_id).values_list("price", "executed_at", "order_id"),
    params=[(Fill._meta.get_field("exec_id"), "\x00exec")],
)


def test_model_rows_come_back_as_the_queryset_gives_them_for_each_value():
    first, second = OrderFactory(), OrderFactory()
    OrderEventFactory(order=first, status="pending_submit")
    OrderEventFactory(order=first, status="submitted", data={"client_id": 3}, average_fill_price=Decimal("1.25"))
    OrderEventFactory(order=second, status="simulated")
    for order in (first, second, OrderFactory()):
        expected = list(OrderEvent.objects.filter(order=order).order_by("-id"))
        got = EVENTS_OF.all(order.pk)
        assert [e.pk for e in got] == [e.pk for e in expected]
        for a, b in zip(got, expected, strict=True):
            assert {f.attname: getattr(a, f.attname) for f in OrderEvent._meta.concrete_fields} == {
                f.attname: getattr(b, f.attname) for f in OrderEvent._meta.concrete_fields
            }
            assert not a._state.adding and a._state.db == "default"
    latest = EVENTS_OF.first(first.pk)
    assert latest.status == "submitted" and latest.data == {"client_id": 3}
    assert latest.average_fill_price == Decimal("1.25") and latest.at.tzinfo is not None
    assert EVENTS_OF.first(uuid.uuid4()) is None


def test_flat_and_tuple_rows_are_converted_like_the_queryset_converts_them():
    OrderFactory(account="DU1", symbol="AAPL", client_order_id="b")
    OrderFactory(account="DU1", symbol="AAPL", client_order_id="a")
    OrderFactory(account="DU2", symbol="AAPL", client_order_id="c")
    assert KEYS_OF.all("DU1", "AAPL") == ["a", "b"]
    assert KEYS_OF.all("DU2", "AAPL") == ["c"]
    assert KEYS_OF.all("DU1", "MSFT") == []
    at = datetime(2026, 3, 2, 15, 30, 0, 123456, tzinfo=UTC)
    fill = FillFactory(price=Decimal("189.42"), executed_at=at)
    assert FILL_TERMS.first(fill.exec_id) == (Decimal("189.42"), at, fill.order_id)
    assert FILL_TERMS.first(fill.exec_id) == tuple(
        Fill.objects.filter(exec_id=fill.exec_id).values_list("price", "executed_at", "order_id").get()
    )


def test_a_sample_the_query_uses_elsewhere_is_refused_when_compiling():
    ambiguous = PreparedRead(
        lambda symbol: Order.objects.filter(symbol=symbol, local_symbol=symbol),
        params=[(Order._meta.get_field("symbol"), "AAPL")],
    )
    with pytest.raises(RuntimeError, match="appears 2 times"):
        ambiguous.all("MSFT")


def test_the_orders_per_minute_count_and_the_kill_switch_read_what_the_ledger_has():
    from datetime import timedelta

    from django.utils import timezone

    from orders.selectors import orders_since, trading_halted
    from tests.factories import TradingSwitchEventFactory

    now = timezone.now()
    for seconds in (30, 59, 90):
        OrderFactory(account="DU1", created_at=now - timedelta(seconds=seconds))
    OrderFactory(account="DU2", created_at=now)
    minute_ago = now - timedelta(seconds=60)
    assert orders_since(account="DU1", since=minute_ago) == 2
    assert orders_since(account="DU2", since=minute_ago) == 1
    assert orders_since(account="DU3", since=minute_ago) == 0
    assert trading_halted() is False
    TradingSwitchEventFactory(halted=True)
    assert trading_halted() is True
    TradingSwitchEventFactory(halted=False)
    assert trading_halted() is False
