"""DRF serializer building blocks shared by every door."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.utils.functional import cached_property
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.utils.serializer_helpers import BindingDict

from ibkrgw.web.fields import StrictDecimalField


class StrictQueryMixin(serializers.Serializer):
    """Unknown query parameters are an error, not silently ignored."""

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown parameter."] for name in sorted(unknown)})
        return attrs


_thread_fields = threading.local()


class FieldsOncePerThread(serializers.Serializer):
    """An input serializer whose fields are built once per thread, not once per instance.

    DRF deep-copies every declared field for each instance (running each field's `__init__` again),
    which costs more than validating a whole order. A serializer made, validated and dropped within
    one request can take the fields its thread built before: fields keep no state of a validation
    (that stays on the serializer: `initial_data`, `validated_data`, `errors`), and each is pointed
    at the new instance. Only for flat serializers (no nested serializer, nothing from the context).
    """

    @cached_property
    def fields(self):
        cache: dict[type, BindingDict] = _thread_fields.__dict__.setdefault("by_class", {})
        fields = cache.get(type(self))
        if fields is None:
            fields = BindingDict(self)
            for name, field in self.get_fields().items():
                if isinstance(field, serializers.BaseSerializer):
                    raise TypeError(f"{type(self).__name__}.{name}: nested serializers cannot be shared")
                fields[name] = field
            cache[type(self)] = fields
            return fields
        fields.serializer = self
        for field in fields.values():
            field.parent = self
        return fields


_MISSING = object()


class DirectRepresentation(serializers.Serializer):
    """An output serializer that reads a plain attribute the plain way.

    For every field of every row DRF's `Field.get_attribute` checks for a Mapping, inspects the value
    for a callable and maps exceptions: on an order with its events and fills that costs more than
    rendering the values. For a field reading one attribute (or the row itself, `source="*"`) that
    holds a plain value, all of it comes down to `getattr` (or `[]` on a mapping). Anything else takes
    DRF's own path: a field with its own `get_attribute` (related fields), a dotted source, an
    attribute that is missing or raises, a callable. So the output is DRF's, field for field.
    """

    @cached_property
    def _representation_plan(self) -> list[tuple[Any, Any, str | None, bool]]:
        plan = []
        for field in self._readable_fields:
            attrs = field.source_attrs
            direct = type(field).get_attribute is serializers.Field.get_attribute and len(attrs) <= 1
            plan.append((field.field_name, field, attrs[0] if attrs else None, direct))
        return plan

    def to_representation(self, instance):
        ret: dict[str, Any] = {}
        mapping = isinstance(instance, Mapping)
        for name, field, attr, direct in self._representation_plan:
            attribute: Any = _MISSING
            if direct:
                if attr is None:
                    attribute = instance
                else:
                    try:
                        attribute = instance[attr] if mapping else getattr(instance, attr)
                    except Exception:  # DRF's path decides: a default, None, skipped, or the error
                        attribute = _MISSING
                    if callable(attribute):
                        attribute = _MISSING
            if attribute is _MISSING:
                try:
                    attribute = field.get_attribute(instance)
                except SkipField:
                    continue
                if isinstance(attribute, PKOnlyObject) and attribute.pk is None:
                    attribute = None
            ret[name] = None if attribute is None else field.to_representation(attribute)
        return ret


def ledger_integer(value: Any) -> int:
    """An integer of a ledger row as stored. SQLite keeps a number with a fraction written into an integer
    column behind the application's back (1.5) and reads it back as a float, which `int()` would turn into
    another id without a word: such a value raises instead (TypeError), so the doors name the row as one that
    cannot be read (`audit.readable`)."""
    if isinstance(value, float):
        raise TypeError(f"{value!r} is not an integer")
    return int(value)


class LedgerIntegerField(serializers.IntegerField):
    """An integer column of the ledger, rendered by `ledger_integer`."""

    def to_representation(self, value: Any) -> int:
        return ledger_integer(value)


def finite_json(value: Any) -> Any:
    """`value` (JSON of a ledger row as read), provided it holds no number JSON cannot carry. SQLite takes
    `1e999` as valid JSON and Python reads it as infinity, which no JSON answer can hold (a websocket frame
    refuses it, a REST answer would show null): such a value raises instead (ValueError), so the doors name
    the row as one that cannot be read (`audit.readable`), as its seal check does."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is float:
            if not math.isfinite(item):
                raise ValueError(f"{item!r} is not a number JSON can carry")
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


class LedgerJSONField(serializers.JSONField):
    """A JSON column of the ledger, rendered once `finite_json` has checked it."""

    def to_representation(self, value: Any) -> Any:
        return super().to_representation(finite_json(value))


class StrictBodyMixin(serializers.Serializer):
    """Unknown fields are an error (a typo must never silently change an order)."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = set(data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return super().to_internal_value(data)


# -- decimals: money, prices and quantities are Decimal, rendered as JSON strings ------------------
class NormalizedDecimalField(serializers.DecimalField):
    """Decimals as plain strings without padding: "10", "419.56", "0" (never "10.00000000" or "0E-8")."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("normalize_output", True)
        super().__init__(*args, **kwargs)


def ledger_decimal(**kwargs) -> serializers.DecimalField:
    """The ledger's precision (20 digits, 8 places): order quantities and prices in, previews out.
    Plain ASCII decimals only: "٣", "４" or "1_0" must never become a quantity."""
    return StrictDecimalField(max_digits=20, decimal_places=8, **kwargs)


LEDGER_MIN_POSITIVE = Decimal("0.00000001")  # the smallest amount the ledger's 8 places can hold


def positive_ledger_decimal(**kwargs) -> serializers.DecimalField:
    """A quantity or price that must be above zero, at the ledger's precision."""
    return ledger_decimal(min_value=LEDGER_MIN_POSITIVE, **kwargs)


def price_field() -> serializers.DecimalField:
    """A market price or size from the broker; null when the broker has none."""
    return NormalizedDecimalField(max_digits=24, decimal_places=10, allow_null=True)


def money_field() -> serializers.DecimalField:
    """An account amount (position, cost, value, P&L); null when the broker has none."""
    return NormalizedDecimalField(max_digits=28, decimal_places=10, allow_null=True)
