"""Declaring MCP tools, resources and prompts: what each app's `mcp_tools` module uses.

Only the declarations live here, so an app lists its tools without importing the MCP server
(`ibkrgw.mcp_server`), which collects them, checks keys and scopes and runs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations
from rest_framework import serializers

from ibkrgw.actors import Actor
from ibkrgw.models import Scope as KeyScope
from ibkrgw.web.mcp_schema import bounded_list, list_schema, output_schema
from ibkrgw.web.serializers import StrictQueryMixin

__all__ = [
    "McpPrompt",
    "McpResource",
    "McpTool",
    "NoInput",
    "bounded_list",
    "for_agents",
    "list_schema",
    "mcp_tool",
    "output_schema",
]


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
    """A prompt; `render(**arguments)` gets the arguments only after `input` (a DRF serializer built from
    the tools' own fields) accepted them, so nothing unchecked is pasted into the text an agent follows."""

    name: str
    title: str
    description: str
    render: Callable[..., str]
    input: type[serializers.Serializer]
    trade: bool = False


class NoInput(StrictQueryMixin, serializers.Serializer):
    """The input of a tool without arguments: any argument is unknown."""


def for_agents(
    base: type[serializers.Serializer],
    *,
    help_texts: Mapping[str, str] | None = None,
    required: Iterable[str] = (),
    choices: Mapping[str, list[str]] | None = None,
) -> type[serializers.Serializer]:
    """`base` (a REST input serializer) with descriptions written for a model.

    The fields stay REST's own (same alphabets, bounds and validation); only what an agent reads
    changes: help texts, a field the tool cannot do without made required, and enum spellings
    narrowed to the one REST uses everywhere (e.g. `right` is C or P).
    """
    texts, needed, options = dict(help_texts or {}), tuple(required), dict(choices or {})

    class ForAgents(base):  # type: ignore[valid-type, misc]
        def get_fields(self) -> dict[str, serializers.Field]:
            fields = super().get_fields()
            for name, text in texts.items():
                fields[name].help_text = text
            for name in needed:
                fields[name].required = True
            for name, values in options.items():
                fields[name].choices = values
            return fields

    ForAgents.__name__ = ForAgents.__qualname__ = base.__name__
    return ForAgents
