"""Account updates, summaries, positions and P&L, requested and pushed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .. import messages as M
from ..account import Account
from ..protocol import Cursor
from ..session import Session

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)
ACCOUNT_BATCH_S = 0.2  # after a fill, account values go out this much later, once for all fills meanwhile


class AccountRequests:
    account: Account  # the gateway's (SimGateway): the trading account
    other_accounts: dict[str, Account]

    # ------------------------------------------------------------ pushes
    def _push_account(self, con_id: int) -> None:
        """After a fill: the position and portfolio row now, the account values with the next batch."""
        p = self.account.positions.get(con_id)
        if not self._account_dirty:
            self._account_dirty = True
            loop = self._loop
            if loop is not None and loop.is_running():
                loop.call_later(ACCOUNT_BATCH_S, self._push_account_values)
            else:
                self._push_account_values()
        for s in self._live():
            if p is not None and s.positions:
                s.send(M.position(self.account_code, p))
            if self._follows_account(s) and p is not None:
                s.send(M.portfolio(self.account, p))
            for req_id in s.pos_multi:
                if p is not None:
                    s.send(M.position_multi(req_id, self.account_code, p))
            for req_id, cid in s.pnl_single.items():
                if cid == con_id:
                    s.send(self._pnl_single_msg(req_id, cid))

    def _push_account_values(self) -> None:
        """Account values, summaries and P&L in one batch (TWS batches them too, rather than per fill)."""
        self._account_dirty = False
        values = self.account.values()
        pnl = self.account.pnl()
        now = datetime.now(UTC).strftime("%H:%M")
        for s in self._live():
            if self._follows_account(s):
                for key, value, cur in values:
                    s.send([6, 2, key, value, cur, self.account_code])
                s.send([8, 1, now])
            for req_id in s.multi:
                for key, value, cur in values:
                    s.send([73, 1, req_id, self.account_code, "", key, value, cur])
            for req_id, tags in s.summary.items():
                for tag, value, cur in self.account.summary(tags):
                    s.send([63, 1, req_id, self.account_code, tag, value, cur])
            for req_id in s.pnl:
                s.send([94, req_id, *pnl])

    def _pnl_single_msg(self, req_id: int, con_id: int) -> list[Any]:
        pos, daily, unreal, real, value = self.account.pnl_single(con_id)
        return [95, req_id, int(pos), daily, unreal, real, value]

    def _push_pnl(self) -> None:
        sessions = [s for s in self._live() if s.pnl or s.pnl_single]
        if not sessions:
            return
        pnl = self.account.pnl()
        for s in sessions:
            for req_id in s.pnl:
                s.send([94, req_id, *pnl])
            for req_id, cid in s.pnl_single.items():
                s.send(self._pnl_single_msg(req_id, cid))

    def _follows_account(self, s: Session) -> bool:
        """Whether the session's account updates are those of the trading account (the one that changes)."""
        return s.acct_updates and s.acct_code in ("", self.account_code)

    # -- account
    def _req_account_updates(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        subscribe, code = c.bool(), c.str()
        s.acct_updates, s.acct_code = subscribe, code
        if not subscribe:
            return
        # As TWS: one account at a time, the one asked for (an account of its own, with nothing traded).
        account = self.other_accounts.get(code, self.account)
        for key, value, cur in account.values():
            s.send([6, 2, key, value, cur, account.code])
        for p in account.positions.values():
            if p.qty != 0:
                s.send(M.portfolio(account, p))
        s.send([8, 1, datetime.now(UTC).strftime("%H:%M")])
        s.send([54, 1, account.code])

    def _req_account_updates_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id, code = c.int(), c.str()
        account = self.other_accounts.get(code, self.account)
        for key, value, cur in account.values():
            s.send([73, 1, req_id, account.code, "", key, value, cur])
        s.send([74, 1, req_id])
        if account is self.account:  # the others never change: nothing traded
            s.multi.add(req_id)

    def _cancel_account_updates_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.multi.discard(c.int())

    def _req_account_summary(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id, _group, tags = c.int(), c.str(), {t.strip() for t in c.str().split(",") if t.strip()}
        for tag, value, cur in self.account.summary(tags):
            s.send([63, 1, req_id, self.account_code, tag, value, cur])
        for account in self.other_accounts.values():  # group "All": every managed account
            for tag, value, cur in account.summary(tags):
                s.send([63, 1, req_id, account.code, tag, value, cur])
        s.send([64, 1, req_id])
        s.summary[req_id] = tags

    def _cancel_account_summary(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.summary.pop(c.int(), None)

    def _req_positions(self, s: Session, c: Cursor) -> None:
        for p in self.account.positions.values():
            if p.qty != 0:
                s.send(M.position(self.account_code, p))
        s.send([62, 1])
        s.positions = True

    def _cancel_positions(self, s: Session, c: Cursor) -> None:
        s.positions = False

    def _req_positions_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        for p in self.account.positions.values():
            if p.qty != 0:
                s.send(M.position_multi(req_id, self.account_code, p))
        s.send([72, 1, req_id])
        s.pos_multi.add(req_id)

    def _cancel_positions_multi(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.pos_multi.discard(c.int())

    def _invalid_account(self, s: Session, req_id: int, code: str) -> bool:
        """IB answers a P&L request naming an account the login does not manage (a typo, "All" on a login that
        is no advisor's) with 321 and no P&L; an empty code means the login's own account."""
        if code in ("", self.account.code) or code in self.other_accounts:
            return False
        s.send(M.error(s.version, req_id, 321, "Error validating request.-'cq' : cause - Invalid account code"))
        return True

    def _req_pnl(self, s: Session, c: Cursor) -> None:
        req_id, code = c.int(), c.str()
        if self._invalid_account(s, req_id, code):
            return
        account = self.other_accounts.get(code, self.account)
        s.send([94, req_id, *account.pnl()])
        if account is self.account:  # the others never change: nothing traded
            s.pnl.add(req_id)

    def _cancel_pnl(self, s: Session, c: Cursor) -> None:
        s.pnl.discard(c.int())

    def _req_pnl_single(self, s: Session, c: Cursor) -> None:
        req_id, code, _model, con_id = c.int(), c.str(), c.str(), c.int()
        if self._invalid_account(s, req_id, code):
            return
        other = self.other_accounts.get(code)
        if other is not None:  # another managed account: its own position, which never changes (nothing traded)
            pos, daily, unreal, real, value = other.pnl_single(con_id)
            s.send([95, req_id, int(pos), daily, unreal, real, value])
            return
        s.send(self._pnl_single_msg(req_id, con_id))
        s.pnl_single[req_id] = con_id

    def _cancel_pnl_single(self, s: Session, c: Cursor) -> None:
        s.pnl_single.pop(c.int(), None)
