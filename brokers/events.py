"""The broker layer's outward face: the events the apps subscribe to and the chores they hand it.

The broker layer knows nothing of orders, market-data groups or websockets. It reports what IB
says as typed events (the frozen dataclasses of `brokers.adapter`, and any type an app hands to
the recorder, such as an order acknowledgement), runs periodic chores in the process that owns the
IB connection, and publishes ticks for other processes through a function it is given. At
start-up `ibkrgw.wiring` subscribes each app's handlers here, once, in every process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_handlers: dict[type, Callable[[Any], object]] = {}
_batchable: set[type] = set()
_chores: dict[str, Chore] = {}
_stop_hooks: dict[str, Callable[[], Any]] = {}
_health_sections: list[Callable[[], dict[str, Any]]] = []
_quote_publication: list[Callable[[Any], tuple[str, dict[str, Any]]] | None] = [None]


@dataclass(frozen=True)
class Chore:
    name: str
    run: Callable[[], Any]
    every_s: float


def subscribe(event_type: type, handler: Callable[[Any], object], *, batchable: bool = False) -> None:
    """`handler(event)` writes one broker event (what it returns is not used). `batchable`: it opens
    only plain (non-durable) transactions, so the recorder may group a burst of such events in one commit."""
    with _lock:
        _handlers[event_type] = handler
        if batchable:
            _batchable.add(event_type)
        else:
            _batchable.discard(event_type)


def handlers() -> dict[type, Callable[[Any], object]]:
    return dict(_handlers)


def handler_for(event_type: type) -> Callable[[Any], object] | None:
    return _handlers.get(event_type)


def batchable() -> frozenset[type]:
    return frozenset(_batchable)


def add_chore(name: str, run: Callable[[], Any], *, every_s: float) -> None:
    """Run `run()` every `every_s` seconds in the process that owns the IB connection."""
    with _lock:
        _chores[name] = Chore(name=name, run=run, every_s=every_s)


def chores() -> list[Chore]:
    return list(_chores.values())


def add_stop_hook(name: str, run: Callable[[], Any]) -> None:
    """Run `run()` once when this process's broker runtime stops (whichever role it had), e.g. to write
    what would otherwise be lost with the process."""
    with _lock:
        _stop_hooks[name] = run


def stop_hooks() -> list[tuple[str, Callable[[], Any]]]:
    return list(_stop_hooks.items())


def add_health_section(section: Callable[[], dict[str, Any]]) -> None:
    """`section()` returns keys merged into the health report (it must not call IB)."""
    with _lock:
        if section not in _health_sections:
            _health_sections.append(section)


def health_sections() -> list[Callable[[], dict[str, Any]]]:
    return list(_health_sections)


def set_quote_publication(publication: Callable[[Any], tuple[str, dict[str, Any]]]) -> None:
    """How a tick is published to other processes: (channel-layer group, message)."""
    _quote_publication[0] = publication


def quote_publication() -> Callable[[Any], tuple[str, dict[str, Any]]] | None:
    return _quote_publication[0]
