"""Input serializers that build their fields once per thread validate each body on its own."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from rest_framework import serializers

from ibkrgw.web.serializers import FieldsOncePerThread
from orders.api import OrderCreateInput

GOOD = {"symbol": "msft", "action": "BUY", "quantity": "2", "order_type": "LMT", "limit_price": "101.5"}


def test_each_instance_validates_its_own_body_with_the_fields_its_thread_built():
    bad = OrderCreateInput(data={**GOOD, "quantity": "-1", "tif": "NEVER"})
    assert not bad.is_valid()
    good = OrderCreateInput(data=GOOD)
    assert good.is_valid(), good.errors
    assert set(bad.errors) == {"quantity", "tif"}  # the first instance keeps its own errors
    request = good.to_request()
    assert (request.symbol, request.quantity, request.limit_price, request.tif) == ("MSFT", 2, Decimal("101.5"), "DAY")
    assert good.fields is bad.fields  # built once in this thread
    assert all(field.parent is good for field in good.fields.values())
    missing = OrderCreateInput(data={"symbol": "AAPL"})
    assert not missing.is_valid()
    assert set(missing.errors) == {"action", "quantity", "order_type"}


def test_threads_do_not_share_fields():
    here = OrderCreateInput(data=GOOD).fields
    there: list = []
    worker = threading.Thread(target=lambda: there.append(OrderCreateInput(data=GOOD).fields))
    worker.start()
    worker.join()
    assert there[0] is not here
    assert there[0].keys() == here.keys()


def test_a_nested_serializer_is_refused():
    class Leg(serializers.Serializer):
        price = serializers.DecimalField(max_digits=10, decimal_places=2)

    class Nested(FieldsOncePerThread, serializers.Serializer):
        leg = Leg()

    with pytest.raises(TypeError, match="nested"):
        Nested(data={"leg": {"price": "1"}}).is_valid()
