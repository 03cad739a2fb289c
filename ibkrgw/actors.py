"""Who did something: every service takes an `Actor` so the audit log can say who and through which door."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)


def current_correlation_id() -> str:
    """The correlation id of the current request/tool call, or a fresh one when there is none."""
    cid = correlation_id_var.get()
    return cid or uuid.uuid4().hex


class ActorKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    MCP = "mcp"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"  # refused before anyone was authenticated (a session post without CSRF token)


class Source(StrEnum):
    REST = "rest"
    WS = "ws"
    MCP = "mcp"
    ADMIN = "admin"
    WORKER = "worker"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    label: str
    source: Source
    correlation_id: str = field(default_factory=current_correlation_id)
    is_admin: bool = False
    # The API key behind a program's request (its primary key), None for anyone else: an order it places is
    # admitted only while the key is still usable (orders.gates.gate_api_key_usable).
    key_id: str | None = None

    @classmethod
    def system(cls, label: str = "worker", source: Source = Source.WORKER) -> Actor:
        return cls(kind=ActorKind.SYSTEM, label=label, source=source)
