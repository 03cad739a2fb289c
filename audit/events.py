"""The one registry of audit event names.

`audit.services.audit_record` accepts only names registered here, so every entry in the log is
one of a known, documented set.

How to add an event:
1. Pick a name `<entity>.<past_tense>`, e.g. `position.closed`.
2. Add one line below, in its group:
       POSITION_CLOSED = register("position.closed", "A position was closed by the operator.")
3. Use the constant, never the string: `audit_record(event=events.POSITION_CLOSED, ...)`.

Names are part of the stored log: never rename or remove one that has been written; add a new
one instead. Registering a name twice raises `ValueError` at import, so a clash cannot ship.
"""

from __future__ import annotations

from types import MappingProxyType

_registry: dict[str, str] = {}
# Read-only view: name -> description.
REGISTRY = MappingProxyType(_registry)


def register(name: str, description: str) -> str:
    """Add `name` to the registry and return it. Raises ValueError if it is already registered."""
    if name in _registry:
        raise ValueError(f"audit event {name!r} is already registered")
    entity, dot, verb = name.partition(".")
    if not (entity and dot and verb) or name != name.strip().lower():
        raise ValueError(f"audit event {name!r} must look like '<entity>.<past_tense>' in lower case")
    _registry[name] = description
    return name


def is_registered(name: str) -> bool:
    return name in _registry


# -- orders ------------------------------------------------------------------------------------
ORDER_SUBMITTED = register("order.submitted", "An order intent was recorded for sending to the broker.")
ORDER_SIMULATED = register("order.simulated", "An order was recorded but not sent (orders disabled).")
ORDER_SENT = register("order.sent", "An order was handed to the broker.")
ORDER_STATUS_CHANGED = register("order.status_changed", "The broker reported a new status for an order.")
ORDER_REJECTED = register("order.rejected", "The broker rejected an order.")
ORDER_CANCEL_REQUESTED = register("order.cancel_requested", "A cancel of an order was requested.")
ORDER_MODIFIED = register("order.modified", "A modification of a working order was sent.")
ORDER_MODIFICATION_UNCONFIRMED = register(
    "order.modification_unconfirmed",
    "The broker did not confirm a modification in time: the order was recorded with the terms the broker holds.",
)
ORDER_UNKNOWN = register("order.unknown", "An order's outcome is not known; it needs reconciliation.")
ORDER_CLOSED = register(
    "order.closed", "An order of unknown outcome was cancelled on request after the broker showed no trace of it."
)
ORDER_APPROVED = register("order.approved", "An operator approved an order waiting for approval.")
ORDER_APPROVAL_REJECTED = register("order.approval_rejected", "An operator rejected an order waiting for approval.")
ORDER_EXPIRED = register("order.expired", "An order waiting for approval expired.")
ORDER_WITHDRAWN = register("order.withdrawn", "An order waiting for approval was withdrawn; it was never sent.")
FILL_RECORDED = register("fill.recorded", "An execution was recorded.")
COMMISSION_RECORDED = register("commission.recorded", "The commission and realised P&L of an execution were recorded.")
GATE_BLOCKED = register("gate.blocked", "A pre-trade gate blocked an order request; nothing was sent.")
REQUEST_REFUSED = register(
    "request.refused", "A malformed order request was refused before the gates; nothing was sent."
)
REFUSALS_SUPPRESSED = register(
    "request.refusals_suppressed", "Refusals over the audit bound were counted here instead of recorded one by one."
)

# -- kill switch -------------------------------------------------------------------------------
TRADING_HALTED = register("trading.halted", "Trading was halted (kill switch on).")
TRADING_RESUMED = register("trading.resumed", "Trading was resumed (kill switch off).")
TRADING_HALT_SWEEP = register(
    "trading.halt_sweep", "While halted, orders still working at the broker were found and cancelled."
)

# -- broker ------------------------------------------------------------------------------------
BROKER_CONNECTED = register("broker.connected", "The gateway connected to IB.")
BROKER_DISCONNECTED = register("broker.disconnected", "The gateway lost its connection to IB.")
BROKER_RECONCILED = register("broker.reconciled", "Orders, fills and commissions were reconciled with IB.")

# -- access and configuration ------------------------------------------------------------------
APIKEY_CREATED = register("apikey.created", "An API key was created.")
APIKEY_REVOKED = register("apikey.revoked", "An API key was revoked.")
SETTINGS_LOADED = register("settings.loaded", "The gateway started with these safety settings.")

# -- the ledger --------------------------------------------------------------------------------
LEDGER_SEALS_KEYED = register(
    "ledger.seals_keyed",
    "An upgrade keyed the ledger's seals: the seals before this entry are vouched for under the seal key as of then.",
)
