"""The kill switch: halt cancels everything and blocks new orders; only an admin user releases it."""

from __future__ import annotations

import logging

from django.db import transaction

from audit import events
from audit.services import audit_record
from brokers import runtime
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from orders.models import TradingSwitchEvent

logger = logging.getLogger(__name__)


# -- kill switch -------------------------------------------------------------------------------
def trading_halt(*, actor: Actor, reason: str = "") -> TradingSwitchEvent:
    """Block new orders and cancel every open order at the broker (global cancel)."""
    row = _trading_switch_record(halted=True, actor=actor, reason=reason)
    try:
        runtime.adapter().orders_cancel_all()
    except BrokerUnavailable:
        logger.warning("trading halted while the broker is unreachable: open orders could not be cancelled now")
    return row


def trading_resume(*, actor: Actor, reason: str = "") -> TradingSwitchEvent:
    """Release the kill switch: only a person signed in as an admin user, never a key or an agent."""
    if actor.kind != ActorKind.USER or not actor.is_admin or actor.source == Source.MCP:
        raise GatewayError(ErrorCode.PERMISSION_DENIED, "Only an admin user can resume trading.", http_status=403)
    return _trading_switch_record(halted=False, actor=actor, reason=reason)


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
        audit_record(
            event=events.TRADING_HALTED if halted else events.TRADING_RESUMED,
            actor=actor,
            target_type="trading",
            data={"reason": reason},
        )
    return row
