"""The kill switch: halt cancels everything and blocks new orders; only an admin user releases it.

A halt is durable. It runs in the order pipeline behind every order already admitted, closes the
broker connection's latch (no order or modification passes it) and sends IB's global cancel. While
halted, `trading_halt_sweep` (run by the process that owns the IB connection every few seconds
and after each reconnect) cancels anything the broker still reports as working, of any client id,
until the broker confirms that none is.

Every process with an IB connection of its own (the web server, a `manage.py mcp`) also watches the
kill switch many times a second (`trading_halt_watch`, one primary-key read): a halt another process
recorded closes this one's latch at once, taking back the orders still queued for IB's message budget
before they leave, and sweeps, instead of letting that queue drain to the broker until the next sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, transaction
from django.utils import timezone

from audit import events
from audit.services import audit_record
from brokers import runtime
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from orders.models import HaltSweep, TradingSwitchEvent
from orders.pipeline import pipeline
from orders.selectors import kill_switch_memory_forget, trading_halted, trading_halted_before_send

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HaltProgress:
    """What the last sweep saw: orders still working at the broker while halted (None: not checked)."""

    working_orders: int | None
    checked_at: datetime | None
    error: str = ""


NOT_CHECKED = HaltProgress(working_orders=None, checked_at=None)


def halt_progress() -> HaltProgress:
    """What the last sweep saw, the same in every process (the sweep runs where the IB connection is)."""
    row = HaltSweep.objects.filter(pk=HaltSweep.ROW).values_list("working_orders", "checked_at", "error").first()
    return NOT_CHECKED if row is None else HaltProgress(*row)


def _set_progress(progress: HaltProgress) -> None:
    HaltSweep.objects.update_or_create(
        pk=HaltSweep.ROW,
        defaults={
            "working_orders": progress.working_orders,
            "checked_at": progress.checked_at,
            "error": progress.error,
        },
    )


# -- kill switch -------------------------------------------------------------------------------
def trading_halt(*, actor: Actor, reason: str = "") -> TradingSwitchEvent:
    """Block new orders and cancel every open order at the broker (global cancel)."""

    def halt() -> TradingSwitchEvent:
        row = _trading_switch_record(halted=True, actor=actor, reason=reason)
        try:
            adapter = runtime.adapter()
            adapter.order_sends_blocked(blocked=True)
            adapter.orders_cancel_all()
        except GatewayError as exc:
            logger.warning("trading halted while the broker is unreachable (%s): the sweep cancels on reconnect", exc)
        return row

    return pipeline().run(halt, keep=True)


def trading_resume(*, actor: Actor, reason: str = "") -> TradingSwitchEvent:
    """Release the kill switch: only a person signed in as an admin user, never a key or an agent."""
    if actor.kind != ActorKind.USER or not actor.is_admin or actor.source == Source.MCP:
        raise GatewayError(ErrorCode.PERMISSION_DENIED, "Only an admin user can resume trading.", http_status=403)

    def resume() -> TradingSwitchEvent:
        row = _trading_switch_record(halted=False, actor=actor, reason=reason)
        try:
            runtime.adapter().order_sends_blocked(blocked=False)
        except GatewayError:
            logger.warning("resumed while the broker is unreachable: the sweep opens the latch on reconnect")
        return row

    return pipeline().run(resume)


def trading_halt_sweep() -> HaltProgress | None:
    """Keep the broker connection in step with the kill switch; while halted, cancel what still works.

    Runs in the pipeline, so it is ordered with every send. Returns None when not halted."""

    def sweep() -> HaltProgress | None:
        halted = trading_halted()
        try:
            adapter = runtime.adapter()
            adapter.order_sends_blocked(blocked=halted)
            if not halted:
                return None
            working = adapter.open_orders()
        except GatewayError as exc:
            progress = HaltProgress(working_orders=halt_progress().working_orders, checked_at=None, error=exc.message)
            _set_progress(progress)
            return progress if halted else None
        if working:
            try:
                adapter.orders_cancel_all()
            except BrokerUnavailable as exc:
                logger.warning("halt sweep could not send the global cancel: %s", exc)
            with transaction.atomic(durable=True):
                audit_record(
                    event=events.TRADING_HALT_SWEEP,
                    actor=Actor.system(),
                    target_type="trading",
                    data={"working_orders": len(working), "refs": [o.order_ref for o in working][:50]},
                )
        progress = HaltProgress(working_orders=len(working), checked_at=timezone.now())
        _set_progress(progress)
        return progress

    return pipeline().run(sweep)


_watch_seen: list[bool | None] = [None]  # what the watch read last (None: nothing yet)


def trading_halt_watch() -> None:
    """Follow a halt or a resume recorded by any process within one watch tick, not at the next sweep.

    On a halt, the latch closes straight away on the IB thread (ahead of the pipeline's queue, whose
    sends each read the kill switch again anyway), then the sweep runs: this process's orders already
    out are cancelled. On a resume, the sweep opens the latch."""
    try:
        halted = trading_halted_before_send()
    except DatabaseError as exc:  # the periodic sweep reports a database it cannot read; no flood of it here
        logger.debug("halt watch could not read the kill switch: %s", exc)
        return
    seen, _watch_seen[0] = _watch_seen[0], halted
    if halted == seen or (seen is None and not halted):
        return
    if halted:
        try:
            runtime.adapter().order_sends_blocked(blocked=True)
        except GatewayError as exc:
            logger.warning("halt watch could not close the latch: %s", exc)
    trading_halt_sweep()


def _trading_switch_record(*, halted: bool, actor: Actor, reason: str) -> TradingSwitchEvent:
    with transaction.atomic(durable=True):
        row = TradingSwitchEvent.objects.create(
            halted=halted,
            reason=reason[:2000],
            actor_kind=actor.kind,
            actor_label=actor.label[:150],
            source=actor.source,
            correlation_id=actor.correlation_id,
        )
        _set_progress(NOT_CHECKED)  # a new halt (or a resume) starts with nothing checked yet
        audit_record(
            event=events.TRADING_HALTED if halted else events.TRADING_RESUMED,
            actor=actor,
            target_type="trading",
            data={"reason": reason},
        )
    # This process wrote the newest row: it is trusted from its own seal on, even if the seal chain was cut
    # short behind the application's back before it (an admin's resume is how trading comes back from that).
    kill_switch_memory_forget()
    return row
