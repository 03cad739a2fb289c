"""The order pipeline: one thread per process through which every change at the broker passes.

Place (each bracket leg), modify, cancel, approve, halt and the halt's sweeps are commands queued
here and run one at a time, in arrival order. The checks that depend on shared state (kill switch,
orders per minute, duplicate window, idempotency, whether an order can still be modified or
cancelled) run inside a command, immediately before its send, so no count can be raced and a halt
queued behind orders in flight takes effect before any later send. Stateless validation stays in
the request thread (`orders.services.checks`), which then waits on the command's future.

Throughput comes from group commit: consecutive placements are admitted in one database
transaction (one savepoint each, one durable commit for the group) and sent in order after it.
Across processes the admission transaction is serialised by the database (SQLite's single writer,
a PostgreSQL advisory lock), so the counts hold there too; the kill switch read again before each
send, its latch on the IB thread and the owner's halt sweep cover halts that cross processes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connection, transaction

from audit.services import ledger_transaction
from ibkrgw.errors import BrokerUnavailable, ErrorCode

logger = logging.getLogger(__name__)
MAX_GROUP = 64  # placements admitted in one commit
RESULT_TIMEOUT_S = 30.0


class SentIds(OrderedDict):
    MAX = 10_000

    def __setitem__(self, key: Any, value: tuple[int, int]) -> None:
        super().__setitem__(key, value)
        if len(self) > self.MAX:
            self.popitem(last=False)


class AdmissionGroup:
    """What the placements of one group share: facts read once per commit, and what earlier
    placements of the group already added to them (so the counts stay exact without re-reading)."""

    def __init__(self) -> None:
        self._memo: dict[Any, Any] = {}
        self.added: dict[Any, int] = {}

    def once(self, key: Any, read: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]

    def add(self, key: Any, n: int) -> None:
        self.added[key] = self.added.get(key, 0) + n


@dataclass
class Command:
    """`admit` runs inside the group's transaction (a savepoint of its own); `after_commit` runs once
    the group has committed (the sends). A command without `admit` runs alone (`run`)."""

    run: Callable[[], Any] | None = None
    admit: Callable[[AdmissionGroup], Any] | None = None
    after_commit: Callable[[Any], Any] | None = None
    on_refused: Callable[[Exception], None] | None = None
    # Run even when its caller stopped waiting (a halt must take effect); others are dropped unstarted.
    keep: bool = False
    future: Future = field(default_factory=Future)


class OrderPipeline:
    def __init__(self) -> None:
        self._queue: queue.Queue[Command | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._serial = threading.Lock()  # one command at a time, also for callers run in their own thread
        # Broker order ids (and client id) of orders this process sent, by order pk, known before the
        # recorder writes them; only the recent ones are needed, so the oldest are forgotten.
        self.sent_ids: SentIds = SentIds()

    # -- callers --------------------------------------------------------------------------------
    def execute(self, command: Command, timeout: float | None = None) -> Any:
        """Queue `command` and wait for its result (its exception is raised here).

        A caller already inside a database transaction runs the command in its own thread (still one
        command at a time): the pipeline's thread could neither see nor wait for its uncommitted rows.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("the order pipeline cannot wait for itself")
        if connection.in_atomic_block:
            with self._serial:
                self._run_group([command]) if command.admit is not None else self._run_alone(command)
            return command.future.result(0)
        self._ensure_started()
        self._queue.put(command)
        timeout = RESULT_TIMEOUT_S if timeout is None else timeout
        try:
            return command.future.result(timeout)
        except TimeoutError:
            if command.future.done():
                raise  # the command's own error
        # Still waiting behind slow broker calls (each bounded by IB_REQUEST_TIMEOUT, which may be longer
        # than this wait): say so plainly, and never let it run later behind its caller's back.
        if not command.keep and command.future.cancel():
            raise BrokerUnavailable(
                f"The order pipeline is waiting on a slow broker; nothing was done within {timeout:g}s. Try again.",
                code=ErrorCode.BROKER_TIMEOUT,
                details={"timeout_s": timeout, "done": False},
            )
        raise BrokerUnavailable(
            f"The broker did not answer within {timeout:g}s; the request "
            + ("is queued and takes effect when it runs." if command.keep else "is on its way: see the ledger."),
            code=ErrorCode.BROKER_TIMEOUT,
            details={"timeout_s": timeout, "done": None},
        )

    def run(self, fn: Callable[[], Any], timeout: float | None = None, *, keep: bool = False) -> Any:
        return self.execute(Command(run=fn, keep=keep), timeout)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued before this call has run (tests, shutdown)."""
        self.run(lambda: None, timeout)

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="order-pipeline", daemon=True)
                self._thread.start()

    # -- the thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            close_old_connections()
            with self._serial:
                group: list[Command] = []
                for command in batch:
                    if command.admit is not None:
                        group.append(command)
                        continue
                    self._run_group(group)
                    group = []
                    self._run_alone(command)
                self._run_group(group)
        connection.close()

    def _run_alone(self, command: Command) -> None:
        if not command.future.set_running_or_notify_cancel():
            return  # its caller gave up waiting before it started
        try:
            command.future.set_result(command.run() if command.run else None)
        except BaseException as exc:  # handed to the caller, never kills the thread
            command.future.set_exception(exc)

    def _run_group(self, group: list[Command]) -> None:
        group = [command for command in group if command.future.set_running_or_notify_cancel()]
        if not group:
            return
        admitted: list[tuple[Command, Any]] = []
        shared = AdmissionGroup()
        try:
            # Durable in the pipeline's thread: the intents (and their seals) are on disk before any send.
            with ledger_transaction(durable=not connection.in_atomic_block):
                for command in group:
                    try:
                        with transaction.atomic():
                            admitted.append((command, command.admit(shared)))
                    except Exception as exc:
                        # The savepoint is gone; the refusal's own record joins the group's commit.
                        if command.on_refused is not None:
                            command.on_refused(exc)
                        command.future.set_exception(exc)
        except BaseException as exc:
            logger.exception("an order admission group failed to commit")
            for command, _ in admitted:
                if not command.future.done():
                    command.future.set_exception(exc)
            for command in group:
                if not command.future.done():
                    command.future.set_exception(exc)
            return
        for command, admission in admitted:
            try:
                result = command.after_commit(admission) if command.after_commit else admission
                command.future.set_result(result)
            except BaseException as exc:
                command.future.set_exception(exc)


_pipeline: OrderPipeline | None = None
_pipeline_lock = threading.Lock()


def pipeline() -> OrderPipeline:
    """This process's order pipeline (started on first use)."""
    global _pipeline
    if _pipeline is None:
        with _pipeline_lock:
            if _pipeline is None:
                _pipeline = OrderPipeline()
    return _pipeline
