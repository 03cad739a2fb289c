"""Shared fixtures for the simulated gateway tests (the sim fixtures plugin comes from tests/conftest.py)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from ib_async import IB

from brokers.sim import SimGateway

# Errors the *server* reports (e.g. 200, 202) are logged by ib_async (and ib_insync) at ERROR level as
# "Error <code>, reqId ..."; those are expected. Anything else (decoder failures,
# "orderStatus: No order found", ...) means the wire format is wrong.
EXPECTED = re.compile(r"^(Error \d+, reqId -?\d+:|Canceled order:)")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def ib_error_guard(request: pytest.FixtureRequest) -> Iterator[_Collector]:
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in ("ib_async", "ib_insync")]
    for logger in loggers:
        logger.addHandler(collector)
    try:
        yield collector
    finally:
        for logger in loggers:
            logger.removeHandler(collector)
    if "allow_ib_errors" in request.fixturenames:
        return
    bad = [f"{r.name}: {r.getMessage()}" for r in collector.records if not EXPECTED.match(r.getMessage())]
    assert not bad, f"the client logged errors: {bad}"


@pytest.fixture
def allow_ib_errors() -> None:
    """Marker fixture: the test provokes client-side errors on purpose."""


@pytest.fixture(params=[157, 178], ids=lambda v: f"v{v}")
def version(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def gw(sim_gateway_factory: Callable[..., SimGateway], version: int) -> SimGateway:
    """A gateway with a frozen market at each instrument's base price (tests move prices explicitly)."""
    g = sim_gateway_factory(server_version=version, tick_interval=0.05, partial_fill_threshold=Decimal("500"))
    g.pause_market()
    for inst in list(g.market.instruments.values()):
        if inst.sec_type != "OPT":
            g.set_price(inst.con_id, inst.base_price)
    return g


@pytest.fixture
def connect() -> Iterator[Callable[..., IB]]:
    clients: list[IB] = []

    def make(gateway: SimGateway, client_id: int = 1, **kwargs) -> IB:
        ib = IB()
        kwargs.setdefault("timeout", 5)
        kwargs.setdefault("raiseSyncErrors", True)
        ib.connect("127.0.0.1", gateway.port, clientId=client_id, **kwargs)
        clients.append(ib)
        return ib

    yield make
    for ib in clients:
        ib.disconnect()


def wait_until(ib: IB, predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Pump ib_async's loop until ``predicate`` holds (no timing assertions, just a deadline)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        ib.sleep(0.02)


@pytest.fixture
def sim_gateway(sim_gateway_factory: Callable[..., SimGateway]) -> SimGateway:
    """The simulator's own tests see its market exactly as the price path draws it (no anchoring)."""
    return sim_gateway_factory()
