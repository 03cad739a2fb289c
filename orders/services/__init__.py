"""Order writes: one service per action, shared by REST, websockets, MCP, the admin and the recorder.

Every write runs in one durable transaction that appends ledger rows, writes its audit entry and
publishes on commit. Rows are only ever appended: an order's state is its latest `OrderEvent`.
"""

from orders.services.approval import (
    approval_needs_another_person,
    order_approve,
    order_reject_approval,
    orders_expire_pending,
)
from orders.services.common import SubmitResult, request_hash
from orders.services.kill_switch import (
    halt_progress,
    trading_halt,
    trading_halt_sweep,
    trading_halt_watch,
    trading_resume,
)
from orders.services.recording import (
    commission_record,
    fill_record,
    order_sent_record,
    order_status_apply,
    order_withdrawn_record,
    orders_reconcile,
)
from orders.services.refusals import refusal_audit, refusal_record, refusals_flush
from orders.services.trading import (
    PreviewResult,
    order_cancel,
    order_client_id,
    order_modify,
    order_preview,
    order_submit,
    order_terms,
)

__all__ = [
    "PreviewResult",
    "SubmitResult",
    "halt_progress",
    "trading_halt_sweep",
    "trading_halt_watch",
    "commission_record",
    "fill_record",
    "approval_needs_another_person",
    "order_approve",
    "order_cancel",
    "order_client_id",
    "order_modify",
    "order_preview",
    "order_reject_approval",
    "order_sent_record",
    "order_status_apply",
    "order_withdrawn_record",
    "order_submit",
    "order_terms",
    "refusal_audit",
    "refusal_record",
    "refusals_flush",
    "orders_expire_pending",
    "orders_reconcile",
    "request_hash",
    "trading_halt",
    "trading_resume",
]
