"""Publishing ledger changes to websocket clients, called on transaction commit.

`seq` is the audit entry's sequence number: the audit log orders every order and fill event, so a
client that reconnects can ask for everything after the last `seq` it saw. The websocket layer
fills these in; they are safe to call when nothing listens and must never raise.
"""

from __future__ import annotations

import logging
import uuid

logger = logging.getLogger(__name__)


def order_event(*, order_id: uuid.UUID, event_id: int, seq: int) -> None:
    """An OrderEvent (and its audit entry `seq`) was committed."""


def fill(*, fill_id: int, seq: int) -> None:
    """A Fill (and its audit entry `seq`) was committed."""
