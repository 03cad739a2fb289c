"""Writes about the broker connection: its ups and downs land in the audit log."""

from __future__ import annotations

from django.db import transaction

from audit import events
from audit.services import audit_record
from brokers.adapter import BrokerConnectionChanged
from ibkrgw.actors import Actor


@transaction.atomic
def broker_connection_record(*, change: BrokerConnectionChanged, address: str, client_id: int) -> None:
    audit_record(
        event=events.BROKER_CONNECTED if change.connected else events.BROKER_DISCONNECTED,
        actor=Actor.system(),
        target_type="gateway",
        target_id=address,
        data={"client_id": client_id, "reason": change.reason},
    )
