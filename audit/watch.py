"""The running gateway's own watch over its ledger: `audit_verify`'s seal checks, a slice at a time.

The triggers refuse raw changes, and health says when one is missing; but someone who can write the
database can drop a trigger, change a row and put the trigger back, and only a verification of the
seals finds that. `manage.py audit_verify` reads the whole ledger at once; this reads a bounded slice
per step (`LEDGER_WATCH_ROWS` seals, and as many rows), run by the process that owns
the IB connection every `LEDGER_WATCH_EVERY_S` seconds, so trading never waits behind it:

1. the seal chain, walked from seq 1 to the head, then again from 1 (a pass): each seal's hash,
   link and MAC;
2. the row each walked seal names, read as stored: a row that differs from its seal (and which
   columns), that is gone, or that holds a value that cannot be read or is stored in a form the
   gateway never writes (`audit.stored`);
3. each ledger table's rows, in primary-key order, table after table: a row that has no seal
   (inserted behind the application's back);
4. the head: a chain that now ends before a seal an earlier pass walked was cut short (the newest
   rows deleted together with their seals), which `audit_verify` only finds against an anchor;
5. at the end of each pass, every API key row against its MAC and the audit log's revocations
   (`ibkrgw.apikeys.apikey_problems`, as `audit_verify` checks them).

What it finds is logged once as an error and shown in `GET health/` (`ledger.watch`), until a whole
pass no longer finds it. The audit log's own chain is not walked here: every audit entry is itself
a sealed row, so a changed entry shows as a row that differs from its seal.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, models
from django.utils import timezone

from audit.chain import ChainBreak
from audit.models import LedgerSeal
from audit.seal import SealChainWalk, sealed_models
from audit.stored import StoredTable
from audit.verify import row_differs, row_gone, row_malformed, row_unsealed
from ibkrgw.apikeys import apikey_problems
from ibkrgw.users import user_problems

logger = logging.getLogger(__name__)
MAX_SHOWN = 20  # problems shown in health
MAX_KEPT = 1000  # problems remembered per pass and logged per process: a ledger rewritten wholesale stays bounded


@dataclass
class WatchState:
    passes: int = 0  # complete passes (see the module docstring)
    checked_to_seq: int = 0  # how far the current pass has walked the seals
    last_pass_at: datetime | None = None
    problems: list[str] = field(default_factory=list)  # the first MAX_SHOWN
    problem_count: int = 0  # all of them (counted up to MAX_KEPT per pass)


class LedgerWatch:
    """The watch's walk and what it found; `step()` is called by one thread, `state()` by any."""

    def __init__(self, *, rows: int | None = None, using: str = DEFAULT_DB_ALIAS) -> None:
        self._rows = rows  # None: LEDGER_WATCH_ROWS, read at each step
        self.using = using
        self._lock = threading.Lock()
        self._tables = sealed_models()
        self._models_by_table = {model._meta.db_table: model for model in self._tables}
        self._stored_tables: dict[type[models.Model], StoredTable] = {}
        self._found: dict[str, None] = {}  # this pass's problems, in the order found
        self._previous: dict[str, None] = {}  # the last complete pass's problems
        self._logged: set[str] = set()
        self._passes = 0
        self._last_pass_at: datetime | None = None
        self._highest = 0  # the newest seal this process has walked: the chain can only grow past it
        self._start_pass()

    def _start_pass(self) -> None:
        self._walk = SealChainWalk()
        self._cursor = 0  # the last seal seq walked in this pass
        self._seals_done = False  # the walk reached the head, or stopped at a break
        self._table_index = 0
        self._row_cursor: Any = None  # the last primary key checked in the current table
        self._rows_done = not self._tables

    @property
    def rows(self) -> int:
        return settings.LEDGER_WATCH_ROWS if self._rows is None else self._rows

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> None:
        """Check the next slice of seals and of one table's rows; a pass ends when both are through."""
        if not self._seals_done:
            self._walk_seals()
        if not self._rows_done:
            self._rows_have_seals()
        if self._seals_done and self._rows_done:
            # A handful of rows: all of them, once a pass.
            for problem in apikey_problems(self.using)[1] + user_problems(self.using)[1]:
                self._report(problem)
            with self._lock:
                self._previous, self._found = self._found, {}
                self._passes += 1
                self._last_pass_at = timezone.now()
            self._start_pass()

    def state(self) -> WatchState:
        with self._lock:
            seen = list({**self._previous, **self._found})
            return WatchState(self._passes, self._cursor, self._last_pass_at, seen[:MAX_SHOWN], len(seen))

    def _walk_seals(self) -> None:
        seals = list(LedgerSeal.objects.using(self.using).filter(seq__gt=self._cursor).order_by("seq")[: self.rows])
        walk = copy.copy(self._walk)  # kept only once the slice's rows were read too: a failed read is retried
        walked, broken = [], None
        for seal in seals:
            broken = walk.feed(seal)
            if broken is not None:  # the seals after a break cannot be trusted to chain: next pass
                break
            walked.append(seal)
        self._compare_rows(walked)
        self._walk = walk
        if walked:
            self._cursor = walked[-1].seq
        if broken is not None:
            self._chain_broken(broken)
            self._seals_done = True
        if len(seals) < self.rows and not self._seals_done:  # at the head
            self._seals_done = True
            if (broken := self._walk.end()) is not None:
                self._chain_broken(broken)
            if self._cursor < self._highest:
                self._report(
                    f"seal chain cut short: it ends at seal seq {self._cursor}, but this process walked seal seq "
                    f"{self._highest} before: the newest rows were deleted with their seals, or an older backup "
                    "restored"
                )
            self._highest = max(self._highest, self._cursor)

    def _compare_rows(self, seals: list[LedgerSeal]) -> None:
        """Each seal's row, as stored, against the content it sealed."""
        by_table: dict[str, list[LedgerSeal]] = {}
        for seal in seals:
            by_table.setdefault(seal.table, []).append(seal)
        for table, table_seals in by_table.items():
            model = self._models_by_table.get(table)
            if model is None:
                self._report(f"seal seq {table_seals[0].seq} names table {table!r}, which is not a ledger table")
                continue
            keys = []
            for seal in table_seals:
                try:
                    keys.append(model._meta.pk.to_python(seal.row_pk))
                except ValidationError:
                    pass  # a forged seal naming a key this table cannot have: its row is gone below
            rows = self._stored(model).rows(keys)
            for seal in table_seals:
                found = rows.get(seal.row_pk)
                if found is None:
                    self._report(row_gone(table, seal.row_pk, seal.seq))
                    continue
                if found.problems:
                    self._report(row_malformed(table, found.pk, found.problems))
                if found.content is not None and found.content != seal.content:
                    self._report(row_differs(table, seal.row_pk, seal.seq, seal.content, found.content))

    def _stored(self, model: type[models.Model]) -> StoredTable:
        stored = self._stored_tables.get(model)
        if stored is None:
            stored = self._stored_tables[model] = StoredTable(model, self.using)
        return stored

    def _rows_have_seals(self) -> None:
        """The next slice of rows, table after table (LEDGER_WATCH_ROWS in all): each has a seal."""
        budget = self.rows
        while budget > 0 and not self._rows_done:
            model: type[models.Model] = self._tables[self._table_index]
            table = model._meta.db_table
            found = self._stored(model).keys(after=self._row_cursor, limit=budget)
            keys = [key for key, _ in found]
            sealed = set(
                LedgerSeal.objects.using(self.using)
                .filter(table=table, row_pk__in=keys)
                .values_list("row_pk", flat=True)
            )
            for key in keys:
                if key not in sealed:
                    self._report(row_unsealed(table, key))
            if len(found) == budget:  # the budget is spent inside this table: go on from here next step
                self._row_cursor = found[-1][1]
                return
            budget -= len(found)
            self._table_index, self._row_cursor = self._table_index + 1, None  # this table is through
            self._rows_done = self._table_index == len(self._tables)

    def _chain_broken(self, broken: ChainBreak) -> None:
        self._report(f"seal chain BROKEN at seal seq {broken.seq} ({broken.event}): {broken.reason}")

    def _report(self, problem: str) -> None:
        with self._lock:
            if len(self._found) < MAX_KEPT:
                self._found[problem] = None
        if problem in self._logged or len(self._logged) > MAX_KEPT:
            return
        self._logged.add(problem)
        if len(self._logged) > MAX_KEPT:
            logger.error(
                "ledger watch: more than %d problems; no more are logged: run manage.py audit_verify", MAX_KEPT
            )
        else:
            logger.error("ledger watch: %s (run manage.py audit_verify for the whole report)", problem)


_watch: list[LedgerWatch | None] = [None]
_watch_lock = threading.Lock()


def ledger_watch() -> LedgerWatch:
    """This process's watch (made on first use)."""
    with _watch_lock:
        watch = _watch[0]
        if watch is None:
            watch = _watch[0] = LedgerWatch()
        return watch


def ledger_watch_step() -> None:
    if settings.LEDGER_WATCH_ROWS:  # 0: the watch is off
        ledger_watch().step()


def ledger_watch_forget() -> None:
    """Start over with a new watch (tests: each has a fresh database)."""
    with _watch_lock:
        _watch[0] = None


def ledger_watch_state() -> WatchState | None:
    """What this process's watch has found so far, or None when it does not run here."""
    return _watch[0].state() if _watch[0] is not None else None
