"""Declaring MCP tools, resources and prompts, and the JSON schemas agents see: what each app's
`mcp_tools` module uses.

Only the declarations live here, so an app lists its tools without importing the MCP server
(`ibkrgw.mcp_server`), which collects them, checks keys and scopes and runs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from mcp_types import ToolAnnotations
from rest_framework import serializers
from rest_framework.settings import api_settings

from ibkrgw.actors import Actor
from ibkrgw.models import Scope as KeyScope
from ibkrgw.web.serializers import StrictQueryMixin


def project_version() -> str:
    """The version the project publishes (OpenAPI `info.version`), also shown as MCP serverInfo.version."""
    return str(settings.SPECTACULAR_SETTINGS["VERSION"])


# -- declaring tools, resources and prompts (used by each app's mcp_tools) --------------------------
@dataclass(frozen=True)
class McpTool:
    name: str
    title: str
    description: str
    input: type[serializers.Serializer]
    output_schema: dict[str, Any]
    body: Callable[[Any, Actor], Any]
    scope: KeyScope
    annotations: ToolAnnotations


def mcp_tool(
    *,
    title: str,
    input: type[serializers.Serializer],
    output: type[serializers.Serializer] | serializers.Serializer | dict[str, Any],
    trade: bool = False,
    idempotent: bool = False,
    destructive: bool = True,
) -> Callable[[Callable[[Any, Actor], Any]], McpTool]:
    """Declare a tool; its name is the function's, its description the docstring.

    `body(validated_input_serializer, actor)` returns a JSON object (an output serializer's
    `.data`), described by `output`: a serializer (its schema is derived) or a JSON schema.
    `trade=True` tools need scope trade and are left out in read-only mode; the others need
    scope read and are marked read-only.
    """

    def declare(body: Callable[[Any, Actor], Any]) -> McpTool:
        if trade:
            annotations = ToolAnnotations(
                title=title, read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent
            )
        else:
            annotations = ToolAnnotations(title=title, read_only_hint=True)
        return McpTool(
            name=body.__name__,
            title=title,
            description=inspect.cleandoc(body.__doc__ or ""),
            input=input,
            output_schema=output if isinstance(output, dict) else output_schema(output),
            body=body,
            scope=KeyScope.TRADE if trade else KeyScope.READ,
            annotations=annotations,
        )

    return declare


@dataclass(frozen=True)
class McpResource:
    """A resource; `uri` may be a template (`ibkr://orders/{order_id}`), then `read` takes its parameters.

    Who may subscribe and when subscribers are told is up to the app module's `resource_known(uri)`
    and `resources_changed(state, uris)` (see `ResourceWatch`)."""

    uri: str
    name: str
    description: str
    read: Callable[..., Any]


@dataclass(frozen=True)
class McpPrompt:
    name: str
    title: str
    description: str
    render: Callable[..., str]
    trade: bool = False


class NoInput(StrictQueryMixin, serializers.Serializer):
    """The input of a tool without arguments: any argument is unknown."""


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


# -- running one call: the one wrapper for actor, correlation id, threads and errors ---------------
