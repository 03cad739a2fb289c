"""Orders: place, modify, cancel, what-if, open and completed orders, executions; engine reports."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import messages as M
from ..account import commission_for
from ..book import OrderEngine, Reject, SimExecution, SimOrder
from ..history import parse_end
from ..protocol import Cursor, parse_place_order
from ..records import SimCancelRecord, SimOrderRecord
from ..session import Session
from ..universe import Instrument

if TYPE_CHECKING:  # pragma: no cover
    from ..faults import Faults

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)


class OrderRequests:
    faults: Faults  # the gateway's (SimGateway)

    def _order_targets(self, o: SimOrder) -> list[Session]:
        return [
            s
            for s in self._live()
            if s.client_id == o.client_id
            or (self.master_client_id is not None and s.client_id == self.master_client_id)
        ]

    def _owner(self, client_id: int) -> Session | None:
        return next((s for s in self._live() if s.client_id == client_id), None)

    # ------------------------------------------------------------ OrderSink
    def order_changed(self, order: SimOrder) -> None:
        for s in self._order_targets(order):
            s.send(M.open_order(s.version, order))
            s.send(M.order_status(order))

    def filled(self, order: SimOrder, ex: SimExecution) -> None:
        for s in self._order_targets(order):
            s.send(M.exec_details(s.version, -1, ex, self.account_code))
            s.send(M.open_order(s.version, order))
            s.send(M.order_status(order))
            s.send(M.commission_report(ex))
        self._push_account(order.inst.con_id)

    def warn(self, order: SimOrder, code: int, message: str) -> None:
        owner = self._owner(order.client_id)
        if owner is not None:
            owner.send(M.error(owner.version, order.order_id, code, message))

    def cancelled(self, order: SimOrder, code: int, message: str) -> None:
        for s in self._order_targets(order):
            s.send(M.open_order(s.version, order))
            s.send(M.order_status(order))
        owner = self._owner(order.client_id)
        if owner is not None:
            owner.send(M.error(owner.version, order.order_id, code, message))

    # -- orders
    def _place_order(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        cid = s.client_id
        req = parse_place_order(c.fields, s.version)
        inst = self._resolve(req.contract)
        perm_id: int | None = None
        try:
            if not req.contract.exchange.strip():
                # IB validates the order's routing first: no exchange, no order, however plain the contract.
                raise Reject(321, "Error validating request.-'bN' : cause - Missing order exchange.")
            if inst is None and req.what_if:
                # IB answers a what-if for a contract it cannot resolve as a validation error, not 200.
                raise Reject(321, "Error validating request.-'bN' : cause - Invalid contract id or contract")
            if inst is None:
                raise Reject(200, M.NO_SECDEF)
            self.engine.validate(req, inst)
            if req.what_if:
                self.engine.note_order_id(cid, req.order_id)
                s.send(self._what_if(s, req, inst))
                return
            existing = self.engine.orders.get((cid, req.order_id))
            if existing is not None and existing.working:
                perm_id = existing.perm_id
                OrderEngine.check_same_order(existing, req, inst)
                self._check_margin(req, inst, existing)
                self.engine.modify(existing, req, inst)
            elif existing is not None and existing.status == "Filled":
                raise Reject(104, "Can't modify a filled order")
            elif existing is not None or req.order_id <= self.engine.max_order_id.get(cid, 0):
                raise Reject(103, f"Duplicate order id {req.order_id}")
            else:
                rejection = self.faults.rejection(req.order_ref)
                if rejection:
                    raise Reject(201, rejection)
                self._check_margin(req, inst, None)
                perm_id = self.engine.place(cid, req, inst).perm_id
        except Reject as rej:
            # As IB does: the error first, then the rejected order as it now stands (Inactive).
            s.send(M.error(s.version, req.order_id, rej.code, rej.message))
            if not req.what_if and rej.code not in (103, 104, 105, 321):
                rec = self.engine.reject_record(cid, req, inst)
                if rec is not None:
                    perm_id = rec.perm_id
                    s.send(M.open_order(s.version, rec))
                    s.send(M.order_status(rec))
        finally:
            self._received.append(
                SimOrderRecord(
                    client_id=cid,
                    order_id=req.order_id,
                    perm_id=None if req.what_if else perm_id,
                    con_id=inst.con_id if inst else req.contract.con_id,
                    symbol=inst.symbol if inst else req.contract.symbol,
                    sec_type=inst.sec_type if inst else req.contract.sec_type,
                    action=req.action,
                    total_quantity=req.total_quantity,
                    order_type=req.order_type,
                    lmt_price=req.lmt_price,
                    aux_price=req.aux_price,
                    tif=req.tif,
                    order_ref=req.order_ref,
                    what_if=req.what_if,
                    outside_rth=req.outside_rth,
                    account=req.account,
                    parent_id=req.parent_id,
                    transmit=req.transmit,
                    received_at=datetime.now(UTC),
                )
            )

    def _order_price(self, req, inst: Instrument) -> Decimal:
        """The price a margin check assumes: the limit, else the stop/trigger, else the touch."""
        q = self.market.quote(inst.con_id)
        touch = q.ask if req.action == "BUY" else q.bid
        if req.order_type in ("MKT", "MOC", "MIDPRICE", "REL", "TRAIL"):
            return touch
        return req.lmt_price or req.aux_price or touch

    def _check_margin(self, req, inst: Instrument, existing: SimOrder | None) -> None:
        """IB's pre-trade margin check: the position after the order must be covered by equity with loan."""
        if not self.margin_checks or req.total_quantity is None or req.total_quantity <= 0 or req.parent_id:
            return  # a bracket's exits are covered by its parent's check
        qty = req.total_quantity - (existing.filled if existing is not None and existing.working else D0)
        price = self._order_price(req, inst)
        commission = commission_for(inst, qty, price, self.account.fx(inst.currency))
        text = self.account.check_margin(inst, qty if req.action == "BUY" else -qty, price, commission)
        if text:
            raise Reject(201, text)

    def _what_if(self, s: Session, req, inst: Instrument) -> list[Any]:
        """A single openOrder carrying margin and commission estimates; nothing is stored."""
        qty = req.total_quantity
        price = self._order_price(req, inst)
        fx = self.account.fx(inst.currency)
        commission = commission_for(inst, qty, price, fx)
        cents = Decimal("0.01")
        figures = self.account.margin_after(inst, qty if req.action == "BUY" else -qty, price, commission)
        for k in ("init", "maint", "ewl"):
            figures[f"{k}_change"] = figures[f"{k}_after"] - figures[f"{k}_before"]
        state: dict[str, Any] = {k: str(v.quantize(cents)) for k, v in figures.items()}
        state.update(
            commission=commission, min_commission=commission, max_commission=commission, commission_currency="USD"
        )
        order = SimOrder(
            order_id=req.order_id,
            client_id=s.client_id or 0,
            perm_id=0,
            inst=inst,
            exchange=req.contract.exchange or inst.exchange,
            action=req.action,
            total_qty=qty,
            order_type=req.order_type,
            lmt_price=req.lmt_price,
            aux_price=req.aux_price,
            tif=req.tif,
            order_ref=req.order_ref,
            outside_rth=req.outside_rth,
            account=self.account_code,
            status="PreSubmitted",
        )
        return M.open_order(s.version, order, what_if=state)

    def _cancel_order(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        c.skip(1)
        order_id = c.int()
        self._cancels.append(SimCancelRecord(s.client_id, order_id, datetime.now(UTC)))
        try:
            self.engine.cancel(s.client_id, order_id)
        except Reject as rej:
            s.send(M.error(s.version, order_id, rej.code, rej.message))

    def _req_global_cancel(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        self._cancels.append(SimCancelRecord(s.client_id, None, datetime.now(UTC)))
        self.engine.cancel_all()

    def _send_open_orders(self, s: Session, orders: list[SimOrder]) -> None:
        for o in orders:
            s.send(M.open_order(s.version, o))
            s.send(M.order_status(o))
        s.send([53, 1])

    def _req_open_orders(self, s: Session, c: Cursor) -> None:
        sees_all = self.master_client_id is not None and s.client_id == self.master_client_id
        self._send_open_orders(
            s, [o for o in self.engine.orders.values() if o.working and (sees_all or o.client_id == s.client_id)]
        )

    def _req_all_open_orders(self, s: Session, c: Cursor) -> None:
        self._send_open_orders(s, [o for o in self.engine.orders.values() if o.working])

    def _req_auto_open_orders(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        s.auto_bind = c.bool()
        if s.client_id != 0 and s.auto_bind:
            s.auto_bind = False
            # IB error list, 327: only the client with id 0 may bind TWS orders.
            s.send(
                M.error(
                    s.version,
                    -1,
                    327,
                    "Only API connections with clientId set to 0 can set the auto bind TWS orders property.",
                )
            )

    def _req_completed_orders(self, s: Session, c: Cursor) -> None:
        for o in self.engine.orders.values():
            if o.status in ("Filled", "Cancelled", "Inactive"):
                s.send(M.completed_order(s.version, o))
        s.send([102])

    def _req_executions(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id, client_id, acct, since = c.int(), c.int(), c.str(), c.str()
        symbol, sec_type, exchange, side = c.str().upper(), c.str().upper(), c.str().upper(), c.str().upper()
        since_dt = None
        if since:
            try:
                since_dt = parse_end(since.replace("  ", " "))[0]
            except ValueError:
                since_dt = None
        for ex in self.engine.executions:
            o = ex.order
            if (
                (client_id and o.client_id != client_id)
                or (acct and acct != self.account_code)
                or (symbol and o.inst.symbol != symbol)
                or (sec_type and o.inst.sec_type != sec_type)
                or (exchange and exchange not in (o.exchange, o.inst.primary_exchange))
                or (side and side not in (o.action, ex.side))
                or (since_dt and ex.time < since_dt)
            ):
                continue
            s.send(M.exec_details(s.version, req_id, ex, self.account_code))
            s.send(M.commission_report(ex))
        s.send([55, 1, req_id])
