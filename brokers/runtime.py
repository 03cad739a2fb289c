"""The only owner of the IB worker's lifecycle in a process.

`start()` is called from `ibkrgw/asgi.py` and from the commands that need IB (`mcp`,
`healthcheck`, `demo`); never from `AppConfig.ready()`, which also runs for `migrate` and tests.
With `IB_GATEWAY=sim` it connects to the simulated gateway on `IB_SIM_PORT`, starting one
in-process when nothing listens there yet, so every process on the machine sees one market.
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from brokers.adapter import BrokerAdapter
from ibkrgw.errors import BrokerUnavailable

logger = logging.getLogger(__name__)
_lock = threading.Lock()


@dataclass
class Runtime:
    worker: Any
    adapter: BrokerAdapter
    recorder: Any
    sim: Any | None
    housekeeping: Any = None


MAINTENANCE_INTERVAL_S = 5.0


class Housekeeping:
    """Periodic chores that must happen even when nobody calls: expiring unapproved orders."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(MAINTENANCE_INTERVAL_S)

    def _run(self) -> None:
        from django.db import close_old_connections, connection

        from orders.services import orders_expire_pending

        while not self._stop.wait(MAINTENANCE_INTERVAL_S):
            close_old_connections()
            try:
                orders_expire_pending()
            except Exception:
                logger.exception("housekeeping failed")
        connection.close()


_runtime: Runtime | None = None


def gateway_address() -> tuple[str, int]:
    if settings.IB_GATEWAY == "sim":
        return "127.0.0.1", settings.IB_SIM_PORT
    host, _, port = settings.IB_GATEWAY.rpartition(":")
    return host.strip("[]"), int(port)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _ensure_sim(port: int):
    """Start the simulated gateway in this process unless one already listens on `port`."""
    if port and _listening("127.0.0.1", port):
        return None
    from brokers.sim.server import SimGateway

    sim = SimGateway(host="127.0.0.1", port=port, seed=settings.IB_SIM_SEED, master_client_id=None)
    try:
        sim.start()
    except OSError:
        # Another process won the race for the port: use its market.
        return None
    logger.info("started the simulated IB Gateway on 127.0.0.1:%s", sim.port)
    return sim


def start(
    *, client_id: int | None = None, host: str | None = None, port: int | None = None, wait: float | None = None
) -> BrokerAdapter:
    """Start the worker and recorder (idempotent). `wait` seconds: block until connected."""
    global _runtime
    from brokers.handlers import BATCHABLE, recorder_handlers
    from brokers.ib.adapter import IbAdapter
    from brokers.ib.worker import IbWorker
    from brokers.recorder import Recorder

    with _lock:
        if _runtime is None:
            sim = None
            if host is None:
                host, port = gateway_address()
                if settings.IB_GATEWAY == "sim":
                    sim = _ensure_sim(port)
            recorder = Recorder({}, batchable=BATCHABLE)
            worker = IbWorker(
                host=host,
                port=port,
                client_id=settings.IB_CLIENT_ID if client_id is None else client_id,
                account=settings.IB_ACCOUNT,
                connect_timeout=settings.IB_CONNECT_TIMEOUT,
                request_timeout=settings.IB_REQUEST_TIMEOUT,
                market_data_type=settings.MARKET_DATA_TYPE,
                throttle=settings.IB_THROTTLE,
                stale_after_s=settings.QUOTE_STALE_AFTER_S,
                sink=recorder.put,
            )
            recorder.handlers.update(recorder_handlers(worker))
            recorder.start()
            worker.start()
            housekeeping = Housekeeping()
            housekeeping.start()
            _runtime = Runtime(
                worker=worker, adapter=IbAdapter(worker), recorder=recorder, sim=sim, housekeeping=housekeeping
            )
            atexit.register(stop)
        runtime = _runtime
    if wait:
        runtime.worker.wait_connected(wait)
    return runtime.adapter


def stop() -> None:
    """Disconnect, drain the recorder and stop the in-process simulator (bounded)."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is None:
        return
    runtime.housekeeping.stop()
    runtime.worker.stop()
    runtime.recorder.wait_idle(5)
    runtime.recorder.stop()
    if runtime.sim is not None:
        runtime.sim.stop()


def current() -> Runtime | None:
    return _runtime


def adapter() -> BrokerAdapter:
    """The broker adapter of this process; 503 broker_unavailable when none was started."""
    if _runtime is None:
        raise BrokerUnavailable(
            "The broker connection is not started in this process.", details={"state": "not_started"}
        )
    return _runtime.adapter


def orders_allowed() -> bool:
    """Connected and reconciled: the only state in which new orders may be sent."""
    return _runtime is not None and _runtime.worker.state == "connected" and _runtime.worker.reconciled.is_set()
