"""The JSON schemas an agent sees for an MCP tool, derived from the tool's DRF serializers.

The input schema comes from the same DRF input serializer that validates the arguments (so REST and
MCP accept the same values); the output schema from the output serializer that renders the answer,
which the SDK's client checks every answer against.
"""

from __future__ import annotations

import inspect
from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers
from rest_framework.settings import api_settings


# -- the JSON schema an agent sees for arguments, derived from the DRF input serializer -----------
def _field_schema(field: serializers.Field) -> dict[str, Any]:
    schema: dict[str, Any]
    if isinstance(field, serializers.BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, serializers.IntegerField):
        schema = {"type": "integer"}
        schema.update({k: v for k, v in (("minimum", field.min_value), ("maximum", field.max_value)) if v is not None})
    elif isinstance(field, serializers.DecimalField):
        # A string keeps the exact decimal; a JSON number is accepted as REST accepts it.
        schema = {"type": ["string", "number"]}
    elif isinstance(field, serializers.ChoiceField):
        schema = {"type": "string", "enum": [str(choice) for choice in field.choices]}
    elif isinstance(field, serializers.DateTimeField):
        schema = {"type": "string", "format": "date-time"}
    elif isinstance(field, serializers.UUIDField):
        schema = {"type": "string", "format": "uuid"}
    else:
        schema = {"type": "string"}
        if getattr(field, "max_length", None):
            schema["maxLength"] = field.max_length
        pattern = next((v.regex.pattern for v in field.validators if isinstance(v, RegexValidator)), None)
        if pattern:
            schema["pattern"] = pattern
    if getattr(field, "allow_null", False):
        schema["type"] = [*([schema["type"]] if isinstance(schema["type"], str) else schema["type"]), "null"]
    description = str(field.help_text or "")
    if isinstance(field, serializers.DecimalField):
        description = f"{description} A decimal, as a string.".strip()
    if description:
        schema["description"] = description
    if field.default not in (serializers.empty, None, "") and not callable(field.default):
        schema["default"] = field.default
    return schema


def input_schema(serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    fields = serializer_class().fields
    return {
        "type": "object",
        "properties": {name: _field_schema(field) for name, field in fields.items()},
        "required": [name for name, field in fields.items() if field.required],
        "additionalProperties": False,
    }


# -- the JSON schema of an answer, derived from the DRF output serializer --------------------------
def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind is None or kind == "null":
        return schema
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}


def _method_schema(field: serializers.SerializerMethodField) -> dict[str, Any]:
    """A SerializerMethodField's type, read from its method's return annotation."""
    method = getattr(field.parent, field.method_name, None)
    returns = str(inspect.signature(method).return_annotation) if method else ""
    if returns.startswith("list"):
        return {"type": "array"}
    for prefix, kind in (("str", "string"), ("int", "integer"), ("bool", "boolean"), ("dict", "object")):
        if returns.startswith(prefix):
            return {"type": kind}
    return {}


def _output_field_schema(field: serializers.Field) -> dict[str, Any]:
    if isinstance(field, serializers.ListSerializer):
        return _nullable({"type": "array", "items": _output_field_schema(field.child)})
    if isinstance(field, serializers.Serializer):
        return _nullable(_object_schema(field))
    if isinstance(field, serializers.SerializerMethodField):
        schema = _method_schema(field)
    elif isinstance(field, serializers.ListField):
        schema = {"type": "array", "items": _output_field_schema(field.child)}
    elif isinstance(field, serializers.JSONField | serializers.DictField | serializers.RelatedField):
        schema = {}
    elif isinstance(field, serializers.BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, serializers.IntegerField):
        schema = {"type": "integer"}
    elif isinstance(field, serializers.FloatField):
        schema = {"type": "number"}
    elif isinstance(field, serializers.DecimalField):
        as_string = getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING)
        schema = {"type": "string"} if as_string else {"type": "number"}
        schema["description"] = "A decimal, as a string."
    elif isinstance(field, serializers.DateTimeField):
        schema = {"type": "string", "format": "date-time"}
    elif isinstance(field, serializers.CharField | serializers.UUIDField | serializers.ChoiceField):
        schema = {"type": "string"}
    else:
        schema = {}
    if field.help_text:
        schema["description"] = str(field.help_text)
    # Any DRF field renders None as null, declared or not: promise the type, allow null.
    return _nullable(schema)


def _object_schema(serializer: serializers.Serializer) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: _output_field_schema(f) for name, f in serializer.fields.items()},
    }


def output_schema(output: type[serializers.Serializer] | serializers.Serializer) -> dict[str, Any]:
    serializer = output() if isinstance(output, type) else output
    if isinstance(serializer, serializers.ListSerializer):
        raise TypeError("An MCP answer is a JSON object: wrap lists (see list_schema).")
    return _object_schema(serializer)


def list_schema(
    item: type[serializers.Serializer], *, key: str = "results", description: str = "", paged: bool = True
) -> dict[str, Any]:
    """A bounded list: `count` (all matches), `key` (this page) and, when paged, `next_offset`."""
    properties: dict[str, Any] = {
        "count": {"type": "integer", "description": "How many items match, in all pages."},
        key: {"type": "array", "items": _object_schema(item()), "description": description or "This page."},
    }
    if paged:
        properties["next_offset"] = {
            "type": ["integer", "null"],
            "description": "Pass as `offset` to get the next page; null on the last page.",
        }
    return {"type": "object", "properties": properties, "required": list(properties)}


def bounded_list(items: Any, *, total: int, offset: int, limit: int, key: str = "results") -> dict[str, Any]:
    """The answer of a bounded list tool: `items` already sliced to [offset, offset + limit)."""
    return {"count": total, key: items, "next_offset": offset + limit if offset + limit < total else None}
