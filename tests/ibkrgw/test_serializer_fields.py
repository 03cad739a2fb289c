"""Input serializers that build their fields once per thread validate each body on its own."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from rest_framework import serializers

from ibkrgw.web.serializers import DirectRepresentation, FieldsOncePerThread
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


# -- output: DirectRepresentation gives what DRF's own to_representation gives ---------------------
class _Row:
    """Attributes of every kind an output serializer meets."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def computed(self):  # a method: DRF calls it
        return "called"

    @property
    def broken(self):  # a property that raises AttributeError: DRF's default / None / skip applies
        raise AttributeError("no such thing")

    @property
    def gone(self):  # a related row that does not exist: DRF answers None
        from django.core.exceptions import ObjectDoesNotExist

        raise ObjectDoesNotExist


class _Fields(serializers.Serializer):
    plain = serializers.CharField()
    number = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=10, decimal_places=2)
    nothing = serializers.CharField(allow_null=True)
    whole = serializers.SerializerMethodField()
    nested = serializers.CharField(source="inner.name")
    computed = serializers.CharField()
    broken = serializers.CharField(default="fallback")
    broken_null = serializers.CharField(source="broken", allow_null=True)
    broken_skipped = serializers.CharField(source="broken", required=False)
    gone = serializers.CharField()
    absent = serializers.CharField(default="absent-default")
    items = serializers.ListField(child=serializers.IntegerField())

    def get_whole(self, row) -> str:
        return f"{type(row).__name__}:{row['plain'] if isinstance(row, dict) else row.plain}"


class _Direct(DirectRepresentation, _Fields):
    pass


def _drf(instance):
    return serializers.Serializer.to_representation(_Fields(), instance)


@pytest.mark.parametrize(
    "instance",
    [
        _Row(plain="a", number=3, amount=Decimal("1.5"), nothing=None, inner=_Row(name="in"), items=[1, 2]),
        {"plain": "b", "number": 4, "amount": Decimal("2"), "nothing": None, "inner": {"name": "x"}, "items": []},
    ],
    ids=["object", "mapping"],
)
def test_direct_representation_answers_what_drf_answers(instance):
    if isinstance(instance, dict):  # a mapping has neither the methods nor the properties
        instance = {**instance, "computed": "in-dict", "gone": "here", "broken": "set"}
    expected = _drf(instance)
    assert _Direct().to_representation(instance) == expected
    if not isinstance(instance, dict):
        assert expected["computed"] == "called" and expected["gone"] is None and expected["broken"] == "fallback"
        assert "broken_skipped" not in expected and expected["broken_null"] is None


def test_direct_representation_raises_what_drf_raises_for_a_required_missing_attribute():
    row = _Row(number=1, amount=Decimal(1), nothing=None, inner=_Row(name="x"), items=[])  # no `plain`
    with pytest.raises(AttributeError) as drf_error:
        _drf(row)
    with pytest.raises(AttributeError) as direct_error:
        _Direct().to_representation(row)
    assert str(direct_error.value) == str(drf_error.value).replace("_Fields", "_Direct")


@pytest.mark.django_db
def test_ledger_outputs_render_as_drf_renders_them():
    from orders.payloads import FillOutput, OrderEventOutput, OrderOutput, bound
    from orders.selectors import order_get
    from tests.factories import CommissionFactory, FillFactory, OrderEventFactory, OrderFactory

    def drf(serializer_class, row):
        return serializers.Serializer.to_representation(serializer_class(), row)

    order = OrderFactory(limit_price=Decimal("189.5"), preview={"reference_price": "190"})
    events = [OrderEventFactory(order=order, status="submitted", broker_order_id=7, data={"client_id": 1})]
    fills = [FillFactory(order=order), FillFactory(order=order)]
    CommissionFactory(fill=fills[0])
    read = order_get(order_id=order.pk)
    assert bound(OrderOutput).to_representation(read) == drf(OrderOutput, read)
    for event in events:
        assert bound(OrderEventOutput).to_representation(event) == drf(OrderEventOutput, event)
    for fill in fills:
        fill = type(fill).objects.select_related("commission").get(pk=fill.pk)
        assert bound(FillOutput).to_representation(fill) == drf(FillOutput, fill)
    assert bound(FillOutput).to_representation(fills[0])["commission"] is not None
