"""DRF serializer building blocks shared by every door."""

from __future__ import annotations

from rest_framework import serializers


class StrictQueryMixin:
    """Unknown query parameters are an error, not silently ignored."""

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown parameter."] for name in sorted(unknown)})
        return attrs


class StrictBodyMixin:
    """Unknown fields are an error (a typo must never silently change an order)."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = set(data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return super().to_internal_value(data)
