"""pytest plugin: ``pytest_plugins = ["brokers.sim.fixtures"]``.

Fixtures
* ``sim_gateway`` - a started SimGateway on 127.0.0.1:<free port>, stopped at teardown.
* ``sim_gateway_factory`` - ``make(**kwargs)`` starts gateways with custom arguments
  (e.g. ``server_version=157``); all of them are stopped at teardown.

Unlike ``SimGateway()``, whose defaults behave like IB (exchange hours), these default to
``trading_hours="always"`` and ``ib_limits=False`` so tests pass at any hour and under load;
the margin check stays on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .server import SimGateway


@pytest.fixture
def sim_gateway_factory() -> Iterator[Callable[..., SimGateway]]:
    made: list[SimGateway] = []

    def make(**kwargs: Any) -> SimGateway:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        # Tests run at any hour and on loaded machines: the market never closes and IB's pacing limits
        # are off unless a test asks for them (a jittery scheduler can bunch a throttled client's
        # messages into a burst the message-rate limit would punish).
        kwargs.setdefault("trading_hours", "always")
        kwargs.setdefault("ib_limits", False)
        gw = SimGateway(**kwargs)
        gw.start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()


@pytest.fixture
def sim_gateway(sim_gateway_factory: Callable[..., SimGateway]) -> SimGateway:
    return sim_gateway_factory()
