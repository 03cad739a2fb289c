"""The order ledger: append-only rows. An order's current status is its latest `OrderEvent`.

Nothing here is ever updated or deleted (see `audit.ledger` and `audit.triggers`): state changes
are new `OrderEvent` rows, a commission is a new `Commission` row next to its `Fill`, and the kill
switch is the latest `TradingSwitchEvent`. The one exception, `HaltSweep`, is outside the ledger: a
display of what the halt sweep last saw, overwritten by every sweep.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from audit.ledger import AppendOnlyModel
from orders.types import ACTIONS, ORDER_TYPES, TIFS

MONEY: dict[str, Any] = {"max_digits": 20, "decimal_places": 8}


class OrderStatus(models.TextChoices):
    PENDING_SUBMIT = "pending_submit"
    PENDING_APPROVAL = "pending_approval"
    SIMULATED = "simulated"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_PENDING = "cancel_pending"
    CANCELLED = "cancelled"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"


@dataclass
class RecordedRows:
    """Every row of an order as written or read at one moment (its events in order, a bracket entry's
    exits, its fills with their commissions), so a door can answer without reading it again."""

    events: list[OrderEvent]
    children: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)


class Order(AppendOnlyModel):
    """The immutable intent, as requested and resolved (contract, terms, who, when)."""

    # Set by the service that has just recorded this order with every row of it (its first event;
    # a bracket entry's exits), so a door can answer with it without reading it back. None: read it.
    recorded: RecordedRows | None = None

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.CharField(max_length=32)
    client_order_id = models.CharField(max_length=64)
    request_hash = models.CharField(max_length=64)
    # contract
    symbol = models.CharField(max_length=32)
    sec_type = models.CharField(max_length=8)
    exchange = models.CharField(max_length=16, blank=True)
    primary_exchange = models.CharField(max_length=16, blank=True)
    currency = models.CharField(max_length=8)
    con_id = models.BigIntegerField(null=True, blank=True)
    expiry = models.CharField(max_length=16, blank=True)
    strike = models.DecimalField(**MONEY, null=True, blank=True)
    right = models.CharField(max_length=1, blank=True)
    multiplier = models.CharField(max_length=16, blank=True)
    local_symbol = models.CharField(max_length=32, blank=True)
    # terms
    action = models.CharField(max_length=16, choices=[(a, a) for a in ACTIONS])
    quantity = models.DecimalField(**MONEY)
    order_type = models.CharField(max_length=16, choices=[(t, t) for t in ORDER_TYPES])
    limit_price = models.DecimalField(**MONEY, null=True, blank=True)
    stop_price = models.DecimalField(**MONEY, null=True, blank=True)
    trail_amount = models.DecimalField(**MONEY, null=True, blank=True)
    trail_percent = models.DecimalField(**MONEY, null=True, blank=True)
    tif = models.CharField(max_length=8, choices=[(t, t) for t in TIFS])
    outside_rth = models.BooleanField(default=False)
    # brackets: children point at the entry order and share an OCA group
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    oca_group = models.CharField(max_length=64, blank=True)
    role = models.CharField(max_length=16, blank=True, help_text="entry, take_profit or stop_loss in a bracket")
    trading_mode = models.CharField(max_length=8, help_text="paper or live, when the order was recorded")
    preview = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    # who and when
    actor_kind = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=150)
    source = models.CharField(max_length=16)
    correlation_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        # What people may do with orders (superusers hold every permission); API keys have their scope instead.
        permissions = [
            ("trade", "Can place, modify and cancel orders"),
            ("approve", "Can approve and reject orders waiting for approval"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"], name="order_unique_client_order_id_per_account"
            ),
        ]
        indexes = [
            models.Index(fields=["symbol", "created_at"], name="order_symbol_created_idx"),
            # Broker reports name an order by its orderRef (our client_order_id), without the account.
            models.Index(fields=["client_order_id"], name="order_client_order_id_idx"),
            # The orders-per-minute gate counts an account's last minute inside every admission.
            models.Index(fields=["account", "created_at"], name="order_account_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.quantity.normalize():f} {self.symbol} {self.order_type} ({self.client_order_id})"


class OrderEvent(AppendOnlyModel):
    """One state transition of an order, as decided by us or reported by the broker."""

    id = models.BigAutoField(primary_key=True)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="events")
    status = models.CharField(max_length=20, choices=OrderStatus.choices)
    broker_order_id = models.IntegerField(null=True, blank=True)
    perm_id = models.BigIntegerField(null=True, blank=True)
    filled_quantity = models.DecimalField(**MONEY, default=Decimal(0))
    remaining_quantity = models.DecimalField(**MONEY, null=True, blank=True)
    average_fill_price = models.DecimalField(**MONEY, null=True, blank=True)
    reason = models.TextField(blank=True)
    code = models.CharField(max_length=64, blank=True, help_text="stable error code of a block or reject")
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    source = models.CharField(max_length=16, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["order", "id"], name="orderevent_order_id_idx"),
            # The orders-per-minute gate counts approvals (held orders sent later) by their pending_submit events.
            models.Index(fields=["at"], name="orderevent_submit_at_idx", condition=models.Q(status="pending_submit")),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} -> {self.status}"


class Fill(AppendOnlyModel):
    """One IB execution, recorded once (`exec_id` is unique)."""

    class Side(models.TextChoices):
        BOUGHT = "BOT"
        SOLD = "SLD"

    id = models.BigAutoField(primary_key=True)
    exec_id = models.CharField(max_length=64, unique=True)
    # Null for executions of orders this gateway did not place.
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="fills")
    account = models.CharField(max_length=32)
    con_id = models.BigIntegerField(null=True, blank=True)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=8, choices=Side.choices)
    quantity = models.DecimalField(**MONEY)
    price = models.DecimalField(**MONEY)
    executed_at = models.DateTimeField()
    exchange = models.CharField(max_length=16, blank=True)
    broker_order_id = models.IntegerField(null=True, blank=True)
    perm_id = models.BigIntegerField(null=True, blank=True)
    order_ref = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.side} {self.quantity.normalize():f} {self.symbol} @ {self.price.normalize():f} ({self.exec_id})"


class Commission(AppendOnlyModel):
    """Commission and realised P&L of one execution: recorded once known, never by updating the Fill."""

    id = models.BigAutoField(primary_key=True)
    fill = models.OneToOneField(Fill, on_delete=models.PROTECT, related_name="commission")
    exec_id = models.CharField(max_length=64, unique=True)
    commission = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=8, blank=True)
    realized_pnl = models.DecimalField(**MONEY, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.commission.normalize():f} {self.currency} ({self.exec_id})"


class TradingSwitchEvent(AppendOnlyModel):
    """The kill switch: trading is halted when the latest row says so."""

    id = models.BigAutoField(primary_key=True)
    halted = models.BooleanField()
    reason = models.TextField(blank=True)
    actor_kind = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=150)
    source = models.CharField(max_length=16)
    correlation_id = models.CharField(max_length=64)
    at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{'halted' if self.halted else 'resumed'} at {self.at:%Y-%m-%d %H:%M:%S} by {self.actor_label}"


class HaltSweep(models.Model):
    """What the last halt sweep saw at the broker, one row shared by every process: the sweep runs only
    where the IB connection is, and any process's health and console show its progress. Not part of
    the ledger (overwritten; the sweeps that found orders are audited as `trading.halt_sweep`)."""

    ROW = 1

    id = models.PositiveSmallIntegerField(primary_key=True)
    working_orders = models.IntegerField(null=True, help_text="Orders still working at the broker; null: not checked.")
    checked_at = models.DateTimeField(null=True)
    error = models.TextField(blank=True, default="", help_text="Why the last sweep could not look, if it could not.")

    def __str__(self) -> str:
        return f"halt sweep: {self.working_orders} working at {self.checked_at}"
