"""factory-boy factories for the ledger, and helpers for rows that have their own writer.

Ledger rows are append-only: build a new row rather than changing one. Audit entries can only be
written by `audit_record` (it assigns seq and hashes), so `audit_entry()` is a helper, not a factory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import factory
from django.db import transaction
from factory.django import DjangoModelFactory

from audit import events
from audit.models import AuditEntry
from audit.services import audit_record
from ibkrgw.actors import Actor, ActorKind, Source
from ibkrgw.models import Scope, ScopedAPIKey
from orders.models import Commission, Fill, Order, OrderEvent, OrderStatus, TradingSwitchEvent


class OrderFactory(DjangoModelFactory[Order]):
    class Meta:
        model = Order

    account = "DU1234567"
    client_order_id = factory.Sequence(lambda n: f"test-{n:06d}")
    request_hash = factory.Sequence(lambda n: f"{n:064x}")
    symbol = "AAPL"
    sec_type = "STK"
    exchange = "SMART"
    currency = "USD"
    con_id = 265598
    action = "BUY"
    quantity = Decimal("10")
    order_type = "LMT"
    limit_price = Decimal("189.50")
    tif = "DAY"
    trading_mode = "paper"
    actor_kind = ActorKind.API_KEY
    actor_label = "tests (abcd1234)"
    source = Source.REST
    correlation_id = factory.Sequence(lambda n: f"cid-{n}")


class OrderEventFactory(DjangoModelFactory[OrderEvent]):
    class Meta:
        model = OrderEvent

    order = factory.SubFactory(OrderFactory)
    status = OrderStatus.PENDING_SUBMIT
    remaining_quantity = factory.SelfAttribute("order.quantity")
    source = Source.REST


class FillFactory(DjangoModelFactory[Fill]):
    class Meta:
        model = Fill

    exec_id = factory.Sequence(lambda n: f"0000e0d5.{n:08d}.01.01")
    order = factory.SubFactory(OrderFactory)
    account = factory.SelfAttribute("order.account")
    con_id = 265598
    symbol = "AAPL"
    side = Fill.Side.BOUGHT
    quantity = Decimal("10")
    price = Decimal("189.42")
    executed_at = factory.LazyFunction(lambda: datetime.now(UTC))
    exchange = "ISLAND"
    broker_order_id = factory.Sequence(lambda n: 1000 + n)
    order_ref = factory.SelfAttribute("order.client_order_id")


class CommissionFactory(DjangoModelFactory[Commission]):
    class Meta:
        model = Commission

    fill = factory.SubFactory(FillFactory)
    exec_id = factory.SelfAttribute("fill.exec_id")
    commission = Decimal("1.00")
    currency = "USD"


class TradingSwitchEventFactory(DjangoModelFactory[TradingSwitchEvent]):
    class Meta:
        model = TradingSwitchEvent

    halted = True
    reason = "test"
    actor_kind = ActorKind.USER
    actor_label = "admin"
    source = Source.ADMIN
    correlation_id = factory.Sequence(lambda n: f"cid-switch-{n}")


def make_actor(**overrides: Any) -> Actor:
    values: dict[str, Any] = {"kind": ActorKind.SYSTEM, "label": "tests", "source": Source.CLI}
    values.update(overrides)
    return Actor(**values)


def audit_entry(
    *,
    event: str = events.ORDER_SUBMITTED,
    actor: Actor | None = None,
    target_type: str = "order",
    target_id: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one audit entry the only allowed way, in its own transaction."""
    with transaction.atomic():
        return audit_record(
            event=event,
            actor=actor or make_actor(),
            target_type=target_type,
            target_id=target_id,
            data=data if data is not None else {"n": 1},
        )


def api_key(*, name: str = "tests", scope: str = Scope.READ, **fields: Any) -> tuple[ScopedAPIKey, str]:
    """A key and its secret (the secret is what a client sends)."""
    return ScopedAPIKey.objects.create_key(name=name, scope=scope, **fields)
