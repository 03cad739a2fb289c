"""Contract lookups and session basics: contract details, option chains, symbol search, time, ids."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .. import messages as M
from ..protocol import ContractSpec, Cursor
from ..session import Session
from ..universe import Instrument

log = logging.getLogger("brokers.sim")
D0 = Decimal(0)


class ContractRequests:
    managed_accounts: tuple[str, ...]  # the gateway's (SimGateway)

    # ------------------------------------------------------------ request handlers
    def _req_current_time(self, s: Session, c: Cursor) -> None:
        s.send([49, 1, int(datetime.now(UTC).timestamp())])

    def _req_ids(self, s: Session, c: Cursor) -> None:
        assert s.client_id is not None
        s.send([9, 1, self.engine.next_valid_id(s.client_id)])

    def _req_managed_accounts(self, s: Session, c: Cursor) -> None:
        s.send([15, 1, ",".join(self.managed_accounts)])

    def _req_contract_details(self, s: Session, c: Cursor) -> None:
        c.skip(1)
        req_id = c.int()
        spec = ContractSpec.read(c)
        c.skip(1)  # includeExpired
        spec.sec_id_type, spec.sec_id = c.str(), c.str()
        found = self.market.find(spec)
        if not found:
            s.send(M.error(s.version, req_id, 200, M.NO_SECDEF))
            return
        for inst in found:
            exchange = spec.exchange.upper() if spec.exchange else inst.exchange
            if inst.sec_type == "BOND":
                s.send(M.bond_contract_data(s.version, req_id, inst, exchange))
            else:
                s.send(M.contract_data(s.version, req_id, inst, exchange, self.market.today))
        s.send([52, 1, req_id])

    def _req_sec_def_opt_params(self, s: Session, c: Cursor) -> None:
        req_id = c.int()
        symbol, fut_fop_exchange, sec_type, con_id = c.str(), c.str(), c.str(), c.int()
        under = self.market.get(con_id) if con_id else None
        if under is None:
            under = self._resolve(ContractSpec(symbol=symbol, sec_type=sec_type or "STK", currency="USD"))
        if under is not None:
            for exchange, tclass, mult, exps, strikes in self.market.option_chains(under.con_id):
                if fut_fop_exchange and fut_fop_exchange.upper() != exchange:
                    continue
                s.send([75, req_id, exchange, under.con_id, tclass, mult, len(exps), *exps, len(strikes), *strikes])
        s.send([76, req_id])

    def _req_matching_symbols(self, s: Session, c: Cursor) -> None:
        req_id, pattern = c.int(), c.str().upper()
        seen: list[Instrument] = []
        for inst in self.market.instruments.values():
            if inst.sec_type in ("OPT", "FUT") or not pattern:
                continue
            if inst.symbol.startswith(pattern) or pattern in inst.long_name.upper():
                seen.append(inst)
        seen.sort(key=lambda i: (i.symbol != pattern, i.symbol, i.con_id))
        fields: list[Any] = [79, req_id, len(seen[:16])]
        for inst in seen[:16]:
            derivs = sorted(
                {
                    d.sec_type
                    for d in self.market.instruments.values()
                    if d.under_con_id == inst.con_id or (d.sec_type == "FUT" and d.symbol == inst.symbol)
                }
            )
            fields += [
                inst.con_id,
                inst.symbol,
                inst.sec_type,
                inst.primary_exchange or inst.exchange,
                inst.currency,
                len(derivs),
                *derivs,
            ]
            if s.version >= 176:
                fields += [M.ascii_escape(inst.long_name), ""]
        s.send(fields)
