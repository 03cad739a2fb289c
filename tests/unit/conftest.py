"""Fast tests of the safety rules on plain data: no simulator, no network, most without a database."""

from __future__ import annotations

from decimal import Decimal

import pytest
import time_machine

from tests.unit.builders import NOW


@pytest.fixture
def frozen_clock():
    """The clock stands still at NOW: freshness and approval windows are tested to the microsecond."""
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def limits(settings):
    """Small, round limits so each boundary is easy to reach from both sides."""
    settings.RISK_MAX_ORDER_QUANTITY = Decimal("100")
    settings.RISK_MAX_ORDER_NOTIONAL = Decimal("10000")
    settings.RISK_PRICE_COLLAR_PCT = Decimal("5")
    settings.RISK_MAX_ORDERS_PER_MINUTE = 3
    settings.RISK_DUPLICATE_WINDOW_S = 5
    settings.QUOTE_STALE_AFTER_S = 10
    settings.TRADING_MODE = "paper"
    return settings
