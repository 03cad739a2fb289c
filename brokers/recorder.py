"""The recorder thread: the single writer of broker events into the ledger.

The IB worker puts frozen dataclasses on `Recorder.queue`; this thread hands each one to the
service registered for its type, in arrival order (so an execution is always recorded before
its commission). Events that arrive together are written in one transaction, so a burst of statuses
and fills costs one commit and takes the write lock once; a lone event is written the same way, its
rows sealed together as it commits.
A failing write is retried on its own, then logged loudly; it never stops the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connection

from audit.services import ledger_transaction

logger = logging.getLogger(__name__)
RETRIES = 5
MAX_BATCH = 500


class Recorder:
    def __init__(self, handlers: dict[type, Callable[[Any], object]], batchable: frozenset[type] = frozenset()) -> None:
        self.handlers = handlers
        # Types whose handlers are safe to nest in one outer transaction (no durable blocks inside).
        self.batchable = set(batchable)
        self.queue: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ib-recorder", daemon=True)
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Any) -> None:
        self._idle.clear()
        self.queue.put(item)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.queue.put(None)
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once everything queued so far has been written (for commands and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return self.queue.unfinished_tasks == 0

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = [self.queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle_batch([item for item in batch if item is not None])
            finally:
                for _ in batch:
                    self.queue.task_done()
        connection.close()  # this thread's connection; a persistent one would outlive the thread

    def _handle_batch(self, items: list[Any]) -> None:
        run: list[Any] = []
        for item in items:
            if type(item) in self.batchable:
                run.append(item)
                continue
            self._write_together(run)
            run = []
            self._handle(item)
        self._write_together(run)

    def _write_together(self, items: list[Any]) -> None:
        """The burst in one transaction, its rows sealed together before it commits. Events almost
        never fail, so none gets a savepoint of its own (two statements each): should one fail, the
        whole burst is rolled back and each event is written on its own, as a lone event is."""
        if not items:
            return
        close_old_connections()
        try:
            with ledger_transaction():
                for item in items:
                    self.handlers[type(item)](item)
            return
        except Exception:
            logger.warning("batched write failed; writing %d events one by one", len(items), exc_info=True)
        for item in items:
            self._handle(item)

    def _handle(self, item: Any) -> None:
        handler = self.handlers.get(type(item))
        if handler is None:
            logger.debug("no recorder handler for %s", type(item).__name__)
            return
        for attempt in range(1, RETRIES + 1):
            close_old_connections()
            try:
                handler(item)
                return
            except Exception:
                if attempt == RETRIES:
                    logger.exception("recorder could not write %r after %d attempts", item, RETRIES)
                    return
                logger.warning("recorder write failed (attempt %d), retrying", attempt, exc_info=True)
                time.sleep(0.05 * attempt)
