"""What the recorder does with each kind of broker event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brokers.adapter import (
    BrokerCommission,
    BrokerConnectionChanged,
    BrokerExecution,
    BrokerOrderStatus,
    BrokerSnapshot,
)
from orders.types import OrderSent

# Their services open plain (non-durable) transactions, so the recorder may group them in one.
BATCHABLE = frozenset({BrokerOrderStatus, BrokerExecution, BrokerCommission, OrderSent})


def recorder_handlers(worker) -> dict[type, Callable[[Any], None]]:
    from brokers.services import broker_connection_record
    from orders import services as orders

    def reconcile(snapshot: BrokerSnapshot) -> None:
        orders.orders_reconcile(snapshot=snapshot)
        worker.reconciled.set()  # only now may new orders be sent

    return {
        BrokerOrderStatus: lambda report: orders.order_status_apply(report=report),
        BrokerExecution: lambda execution: orders.fill_record(execution=execution),
        BrokerCommission: lambda commission: orders.commission_record(commission=commission),
        OrderSent: lambda sent: orders.order_sent_record(sent=sent),
        BrokerSnapshot: reconcile,
        BrokerConnectionChanged: lambda change: broker_connection_record(
            change=change, address=f"{worker.host}:{worker.port}", client_id=worker.client_id
        ),
    }
