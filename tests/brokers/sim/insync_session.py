"""A session of ib_insync (ib_async's predecessor, still widely used) against a gateway; prints what it saw.

Run as a child process by test_other_clients.py: `python insync_session.py PORT`.
"""

from __future__ import annotations

import json
import math
import sys

from ib_insync import IB, LimitOrder, MarketOrder, Stock


def main(port: int) -> None:
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=41, timeout=10)
    seen: dict = {"server_version": ib.client.serverVersion(), "accounts": ib.managedAccounts()}
    (aapl,) = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    seen["con_id"] = aapl.conId
    ticker = ib.reqMktData(aapl)
    for _ in range(100):
        ib.sleep(0.05)
        if not math.isnan(ticker.bid) and not math.isnan(ticker.ask):
            break
    seen["quote"] = [ticker.bid, ticker.ask]
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 5))
    for _ in range(200):
        ib.sleep(0.05)
        if trade.orderStatus.status == "Filled" and trade.fills and trade.fills[-1].commissionReport.commission:
            break
    seen["market_order"] = {
        "status": trade.orderStatus.status,
        "filled": trade.orderStatus.filled,
        "shares": sum(f.execution.shares for f in trade.fills),
        "commission": sum(f.commissionReport.commission for f in trade.fills),
    }
    resting = ib.placeOrder(aapl, LimitOrder("BUY", 1, 1.00))
    ib.sleep(0.5)
    seen["limit_status"] = resting.orderStatus.status
    ib.cancelOrder(resting.order)
    for _ in range(100):
        ib.sleep(0.05)
        if resting.orderStatus.status == "Cancelled":
            break
    seen["cancelled_status"] = resting.orderStatus.status
    seen["positions"] = {p.contract.symbol: p.position for p in ib.positions()}
    seen["summary_tags"] = sorted({v.tag for v in ib.accountSummary()})
    bars = ib.reqHistoricalData(aapl, "", "1 D", "5 mins", "TRADES", True)
    seen["bar_minutes"] = sorted({b.date.minute % 5 for b in bars})
    seen["bars"] = len(bars)
    ib.disconnect()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(int(sys.argv[1]))
