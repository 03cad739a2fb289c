"""Declaring MCP tools and resources: what each app's `mcp_tools` module uses.

Only the declarations live here, so an app lists its tools without importing the MCP server
(`ibkrgw.mcp_server`), which collects them, checks keys and scopes and runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations
from rest_framework import serializers

from ibkrgw.actors import Actor
from ibkrgw.models import Scope as KeyScope
from ibkrgw.web.serializers import StrictQueryMixin


@dataclass(frozen=True)
class McpTool:
    name: str
    title: str
    description: str
    input: type[serializers.Serializer]
    body: Callable[[Any, Actor], Any]
    scope: KeyScope
    annotations: ToolAnnotations


def mcp_tool(
    *, title: str, input: type[serializers.Serializer], trade: bool = False, idempotent: bool = False
) -> Callable[[Callable[[Any, Actor], Any]], McpTool]:
    """Declare a tool; its name is the function's, its description the docstring.

    `body(validated_input_serializer, actor)` returns JSON-able data (an output serializer's
    `.data`). `trade=True` tools need scope trade and are marked destructive; the others need
    scope read and are marked read-only.
    """

    def declare(body: Callable[[Any, Actor], Any]) -> McpTool:
        if trade:
            annotations = ToolAnnotations(
                title=title, read_only_hint=False, destructive_hint=True, idempotent_hint=idempotent
            )
        else:
            annotations = ToolAnnotations(title=title, read_only_hint=True)
        return McpTool(
            name=body.__name__,
            title=title,
            description=" ".join((body.__doc__ or "").split()),
            input=input,
            body=body,
            scope=KeyScope.TRADE if trade else KeyScope.READ,
            annotations=annotations,
        )

    return declare


@dataclass(frozen=True)
class McpResource:
    uri: str
    name: str
    description: str
    read: Callable[[], Any]


class NoInput(StrictQueryMixin, serializers.Serializer):
    """The input of a tool without arguments: any argument is unknown."""
