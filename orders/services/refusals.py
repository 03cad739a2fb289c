"""Refused order requests that never reached a gate (malformed input) still leave an audit entry.

Bounded, so a flood of bad requests cannot fill the disk: at most REFUSALS_PER_ACTOR_PER_MINUTE
entries per actor and REFUSALS_PER_MINUTE in all, per process, each at most a few KB (the request is
cut to MAX_EXCERPT characters). Refusals over the bound are counted and written as one
`request.refusals_suppressed` entry once the minute is over: by the next refusal, or by
`refusals_flush`, which the process that owns the IB connection runs every few seconds and every
process runs when its broker runtime stops (so a restart does not lose the count).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from audit import events
from audit.services import audit_record
from ibkrgw import metrics
from ibkrgw.actors import Actor

logger = logging.getLogger(__name__)
REFUSALS_PER_ACTOR_PER_MINUTE = 30
REFUSALS_PER_MINUTE = 300
MAX_EXCERPT = 1000

_lock = threading.Lock()
_window_started = time.monotonic()
_per_actor: dict[str, int] = {}
_suppressed: dict[str, int] = {}


def _window_end(now: float) -> dict[str, int]:
    """With `_lock` held: when the window is over, start a new one and return the old one's suppressed counts."""
    global _window_started
    if now - _window_started < 60:
        return {}
    flush = dict(_suppressed)
    _window_started = now
    _per_actor.clear()
    _suppressed.clear()
    return flush


def _admit(actor_key: str) -> tuple[bool, dict[str, int]]:
    """Whether this refusal may be recorded, and the last window's suppressed counts to write now."""
    with _lock:
        flush = _window_end(time.monotonic())
        over_actor = _per_actor.get(actor_key, 0) >= REFUSALS_PER_ACTOR_PER_MINUTE
        if over_actor or sum(_per_actor.values()) >= REFUSALS_PER_MINUTE:
            _suppressed[actor_key] = _suppressed.get(actor_key, 0) + 1
            return False, flush
        _per_actor[actor_key] = _per_actor.get(actor_key, 0) + 1
    return True, flush


def _excerpt(body: Any) -> str:
    try:
        text = json.dumps(body, default=str, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = "<unprintable>"
    return text[:MAX_EXCERPT]


def refusal_audit(
    exc: BaseException, *, status: int, error: Mapping[str, Any], actor: Actor, action: str, body: Any
) -> None:
    """What every door (REST, the order lane, MCP) does with an order-changing request it refused with
    `status` and the error body's `error`: a 4xx other than 401 (nobody to name) that no gate recorded
    already (`exc.audited`) is recorded by `refusal_record`. Never raises."""
    if not 400 <= status < 500 or status == 401 or getattr(exc, "audited", False):
        return
    refusal_record(
        code=str(error.get("code", "invalid_request")),
        message=str(error.get("message", "")),
        details=error.get("details"),
        actor=actor,
        action=action,
        body=body,
    )


def refusal_record(*, code: str, message: str, details: Any, actor: Actor, action: str, body: Any) -> None:
    """Audit one refused order request (place, modify, cancel, preview of a place, halt).

    Never raises: the door calling it is answering the refusal, which a failure to audit it must not
    turn into a 500 (the failure is logged)."""
    try:
        _refusal_write(code=code, message=message, details=details, actor=actor, action=action, body=body)
    except Exception:
        logger.exception("could not audit a refused order request")


def _refusal_write(*, code: str, message: str, details: Any, actor: Actor, action: str, body: Any) -> None:
    metrics.GATE_BLOCKS.labels(code=code).inc()
    allowed, flush = _admit(f"{actor.kind}:{actor.label}")
    if not allowed and not flush:
        return
    with transaction.atomic():
        if flush:
            _summary_write(flush)
        if not allowed:
            return
        audit_record(
            event=events.REQUEST_REFUSED,
            actor=actor,
            target_type="order_request",
            data={
                "action": action,
                "code": code,
                "message": message[:500],
                "details": _excerpt(details),
                "request": _excerpt(body),
            },
        )


def _summary_write(suppressed: dict[str, int]) -> None:
    audit_record(
        event=events.REFUSALS_SUPPRESSED,
        actor=Actor.system(),
        target_type="order_request",
        data={"suppressed_by_actor": suppressed, "window_s": 60},
    )


def refusals_flush(*, final: bool = False) -> None:
    """Write the suppressed counts of a window that is over, without waiting for another refusal; `final`
    (the process is stopping): write the current window's counts too; the window goes on, so the bound
    still holds for refusals that come later. Never raises: a failure is logged and the counts kept."""
    with _lock:
        flush = _window_end(time.monotonic())
        if final and _suppressed:
            for actor_key, count in _suppressed.items():
                flush[actor_key] = flush.get(actor_key, 0) + count
            _suppressed.clear()
    if not flush:
        return
    try:
        with transaction.atomic():
            _summary_write(flush)
    except Exception:
        logger.exception("could not audit the suppressed refusals")
        with _lock:  # written with the next flush
            for actor_key, count in flush.items():
                _suppressed[actor_key] = _suppressed.get(actor_key, 0) + count


def bound_reset() -> None:
    """Start a new bound window now (tests, and an operator after an incident)."""
    global _window_started
    with _lock:
        _window_started = time.monotonic()
        _per_actor.clear()
        _suppressed.clear()
