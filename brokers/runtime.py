"""The only owner of the IB worker's lifecycle in a process.

`start()` is called from `ibkrgw/asgi.py` and from the commands that need IB (`mcp`,
`healthcheck`, `demo`); never from `AppConfig.ready()`, which also runs for `migrate` and tests.
With `IB_GATEWAY=sim` it connects to the simulated gateway on `IB_SIM_PORT`, starting one
in-process when nothing listens there yet, so every process on the machine sees one market.

Several web processes (scale-out): with a Redis channel layer exactly one process owns
the IB connection (`IB_CONNECTION_OWNER`: elected by a database lease, or fixed). The owner runs the
worker, the recorder and housekeeping as a single process does, and serves broker calls on the
channel layer (`brokers.scaleout.server.BrokerServer`). The others are followers: their `adapter()` is a
`RemoteAdapter`, their `current().worker` shows the owner's state, and they keep trying to take the
lease, so when the owner dies one of them starts its own worker, which connects and reconciles
before orders are allowed again.
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from brokers import events
from brokers.adapter import BrokerAdapter, BrokerConnectionChanged, BrokerSnapshot, Quote
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
    owner: bool = True  # False: a follower reaching the owner of the IB connection through the channel layer


CHORE_TICK_S = 0.5


class Housekeeping:
    """Runs the chores the apps handed to the broker layer (`brokers.events.add_chore`), each at its
    own interval, in the process that owns the IB connection."""

    def __init__(self, own: list[events.Chore] | None = None) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._own = own or []  # the broker layer's own chores, for this runtime's connection

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from django.db import close_old_connections, connection

        due: dict[str, float] = {}
        tick = CHORE_TICK_S
        while not self._stop.wait(tick):
            now = time.monotonic()
            chores = [*self._own, *events.chores()]
            tick = min([CHORE_TICK_S, *(chore.every_s for chore in chores)])  # as often as the most frequent
            for chore in chores:
                if now < due.get(chore.name, 0.0):
                    continue
                due[chore.name] = now + chore.every_s
                close_old_connections()
                try:
                    chore.run()
                except Exception:
                    logger.exception("chore %s failed", chore.name)
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

    sim = SimGateway(
        host="127.0.0.1",
        port=port,
        seed=settings.IB_SIM_SEED,
        master_client_id=None,
        trading_hours=settings.TRADING_HOURS,  # "always" unless the deployment follows exchange hours
        ib_limits=False,  # the gateway paces itself; the limits are for testing clients against IB's rules
    )
    try:
        sim.start()
    except OSError:
        # Another process won the race for the port: use its market.
        return None
    logger.info("started the simulated IB Gateway on 127.0.0.1:%s", sim.port)
    return sim


def ownership() -> str:
    """How this process reaches IB: "own" (its own connection: one process, or no Redis channel layer),
    "lease" (elected owner or follower), "always" (fixed owner) or "never" (fixed follower)."""
    mode = settings.IB_CONNECTION_OWNER
    if not settings.CHANNEL_LAYER_URL:
        if mode == "never":
            raise ImproperlyConfigured("IB_CONNECTION_OWNER=never needs a Redis CHANNEL_LAYER_URL to reach the owner")
        return "own"
    return "lease" if mode == "auto" else mode


def _owner_runtime(*, client_id: int | None = None, host: str | None = None, port: int | None = None) -> Runtime:
    from brokers.ib.adapter import IbAdapter
    from brokers.ib.worker import IbWorker
    from brokers.recorder import Recorder

    sim = None
    if host is None:
        host, port = gateway_address()
        if settings.IB_GATEWAY == "sim":
            sim = _ensure_sim(port)
    recorder = Recorder({}, batchable=events.batchable())
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
        stream_lines=settings.IB_MARKET_DATA_LINES - settings.MARKET_DATA_LINES_RESERVED,
    )
    recorder.handlers.update(_recorder_handlers(worker))
    recorder.start()
    worker.start()
    from brokers.services import LINE_SHARE_EVERY_S, market_data_lines_share

    lines = events.Chore("brokers.market_data_lines", lambda: market_data_lines_share(worker), LINE_SHARE_EVERY_S)
    housekeeping = Housekeeping(own=[lines])
    housekeeping.start()
    return Runtime(worker=worker, adapter=IbAdapter(worker), recorder=recorder, sim=sim, housekeeping=housekeeping)


def _recorder_handlers(worker) -> dict[type, Any]:
    """The apps' subscribed handlers, plus what the broker layer itself records: its connection's
    ups and downs, and, once reconciliation has been written, that new orders may be sent."""
    from brokers.services import broker_connection_record

    handlers = events.handlers()
    reconcile = handlers.get(BrokerSnapshot)

    def reconciled(snapshot: BrokerSnapshot) -> None:
        if reconcile is not None:
            reconcile(snapshot)
        # Only now may new orders be sent; not on a snapshot of a connection lost since (a late re-check).
        if snapshot.connection in ("", worker.connection_id):
            worker.reconciled.set()

    handlers[BrokerSnapshot] = reconciled
    handlers[BrokerConnectionChanged] = lambda change: broker_connection_record(
        change=change, address=f"{worker.host}:{worker.port}", client_id=worker.client_id
    )
    return handlers


def _stop_owner(runtime: Runtime) -> None:
    from brokers.services import market_data_lines_withdraw

    runtime.housekeeping.stop()
    runtime.worker.stop()
    try:
        market_data_lines_withdraw(runtime.worker)
    except Exception:  # best effort: the others see the report go stale soon
        logger.warning("could not withdraw this connection's market-data line report", exc_info=True)
    runtime.recorder.wait_idle(5)
    runtime.recorder.stop()
    if runtime.sim is not None:
        runtime.sim.stop()


def _connected_and_reconciled(runtime: Runtime) -> bool:
    return runtime.worker.state == "connected" and runtime.worker.reconciled.is_set()


def _quote_publication(quote: Quote) -> tuple[str, dict[str, Any]]:
    """The websocket group and message of a tick, as the app that owns quote groups publishes them."""
    publication = events.quote_publication()
    if publication is None:
        raise RuntimeError("no quote publication is wired (ibkrgw.wiring)")
    return publication(quote)


class _Cluster:
    """This process's part in a deployment of several processes sharing one IB connection."""

    def __init__(self, role: str) -> None:
        from brokers.scaleout.follower import AckRecorder, RemoteAdapter, RemoteWorker
        from brokers.scaleout.lease import IB_CONNECTION, LeaseKeeper, holder_id
        from brokers.scaleout.protocol import RpcLoop

        self.role = role
        self.id = holder_id()
        self.rpc = RpcLoop()
        host, port = gateway_address()
        self.remote = RemoteAdapter(
            self.rpc, timeout=settings.IB_REQUEST_TIMEOUT, follower_id=self.id, gateway=f"{host}:{port}"
        )
        self.follower = Runtime(
            worker=RemoteWorker(self.remote), adapter=self.remote, recorder=AckRecorder(), sim=None, owner=False
        )
        self.server: Any = None
        self.keeper = None
        if role == "lease":
            self.keeper = LeaseKeeper(
                name=IB_CONNECTION,
                holder=self.id,
                ttl_s=settings.IB_LEASE_TTL_S,
                renew_s=settings.IB_LEASE_RENEW_S,
                on_change=self.on_lease_change,
            )

    def on_lease_change(self, held: bool) -> None:
        if held:
            self.promote()
        else:
            self.demote()

    def promote(self) -> None:
        """Become the owner: start the worker (it connects and reconciles), then serve the others."""
        global _runtime
        from brokers.scaleout.server import BrokerServer

        owner = _owner_runtime()
        server = BrokerServer(
            self.rpc,
            adapter=owner.adapter,
            orders_allowed=lambda: _connected_and_reconciled(owner),
            server_id=self.id,
            worker=owner.worker,
            publication=_quote_publication,
        )
        # This process's own quote watchers now need the local worker.
        for contract, watchers in self.remote.take_subscriptions():
            for _ in range(watchers):
                owner.adapter.quote_subscribe(contract=contract)
        with _lock:
            current = _cluster is self
            if current:
                self.server, _runtime = server, owner
        if not current:  # stopped while starting
            server.stop()
            _stop_owner(owner)
            return
        logger.warning("this process (%s) now owns the IB connection", self.id)

    def demote(self) -> None:
        """Stop owning (the lease was lost): stop serving, disconnect, and call the new owner instead.

        The quote subscriptions of this process's own websocket clients are not handed to the new owner:
        those clients must subscribe again."""
        global _runtime
        with _lock:
            owner, server = _runtime, self.server
            if _cluster is not self or owner is None or not owner.owner:
                return
            self.server, _runtime = None, self.follower
        server.stop()
        _stop_owner(owner)
        logger.warning("this process (%s) no longer owns the IB connection", self.id)

    def release(self) -> None:
        """After disconnecting from IB: let another process take over at once."""
        from brokers.scaleout.lease import IB_CONNECTION, lease_release

        if self.keeper is not None and self.keeper.held:
            try:
                lease_release(name=IB_CONNECTION, holder=self.id)
            except Exception:
                logger.warning("could not release the IB connection lease", exc_info=True)
        self.remote.close()
        self.rpc.stop()


_cluster: _Cluster | None = None


def start(
    *, client_id: int | None = None, host: str | None = None, port: int | None = None, wait: float | None = None
) -> BrokerAdapter:
    """Start the broker runtime of this process (idempotent). `wait` seconds: block until connected.

    With explicit `client_id`/`host`/`port` (commands, tests) the process owns its own connection;
    otherwise `ownership()` decides whether it owns it, follows an owner, or takes part in the lease.
    """
    global _runtime, _cluster
    cluster = None
    with _lock:
        if _runtime is None:
            role = "own" if client_id is not None or host is not None else ownership()
            if role == "own":
                _runtime = _owner_runtime(client_id=client_id, host=host, port=port)
            else:
                cluster = _cluster = _Cluster(role)
                _runtime = cluster.follower
            atexit.register(stop)
    if cluster is not None:
        if cluster.role == "always":
            cluster.promote()
        elif cluster.keeper is not None:
            cluster.keeper.start()
            # The first process to start owns the connection from the start.
            cluster.keeper.first_attempt.wait(settings.IB_LEASE_TTL_S)
    runtime = _runtime
    if runtime is None:
        raise BrokerUnavailable("The broker runtime was stopped while starting.")
    if wait:
        runtime.worker.wait_connected(wait)
    return runtime.adapter


def stop() -> None:
    """Disconnect, drain the recorder and stop the in-process simulator (bounded).

    In a scale-out deployment: also stop serving and following, and release the lease at once."""
    global _runtime, _cluster
    with _lock:
        runtime, _runtime = _runtime, None
        cluster, _cluster = _cluster, None
    if cluster is not None:
        if cluster.keeper is not None:
            cluster.keeper.stop()
        if cluster.server is not None:
            cluster.server.stop()
    if runtime is not None and runtime.owner:
        _stop_owner(runtime)
    if cluster is not None:
        cluster.release()
    if runtime is not None:
        _run_stop_hooks()


def _run_stop_hooks() -> None:
    """The apps' last words (`brokers.events.add_stop_hook`), once the broker events are all recorded."""
    for name, hook in events.stop_hooks():
        try:
            hook()
        except Exception:
            logger.exception("stop hook %s failed", name)


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
    """Connected and reconciled: the only state in which new orders may be sent (a follower asks the owner)."""
    runtime = _runtime
    if runtime is None:
        return False
    if not runtime.owner:
        return runtime.adapter.orders_allowed()
    return _connected_and_reconciled(runtime)
