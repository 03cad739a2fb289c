from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async import Future, MarketOrder, Stock

from .conftest import wait_until


def _values(ib, tag, currency="USD"):
    return float(next(v.value for v in ib.accountValues() if v.tag == tag and v.currency == currency))


def test_account_follows_fills_long_and_short(gw, connect):
    ib = connect(gw)
    aapl, msft = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"), Stock("MSFT", "SMART", "USD"))
    assert _values(ib, "TotalCashValue") == 1_000_000
    buy = ib.placeOrder(aapl, MarketOrder("BUY", 100))
    short = ib.placeOrder(msft, MarketOrder("SELL", 50))
    wait_until(ib, lambda: buy.isDone() and short.isDone())
    wait_until(ib, lambda: {p.contract.conId: p.position for p in ib.positions()} == {265598: 100, 272093: -50})
    wait_until(ib, lambda: len(ib.portfolio()) == 2)
    items = {p.contract.conId: p for p in ib.portfolio()}
    assert items[272093].position == -50 and items[272093].marketValue == pytest.approx(-50 * 420.0)
    assert items[265598].averageCost == pytest.approx(190.01 + 0.01)  # commission included, like TWS
    expected_cash = 1_000_000 - 100 * 190.01 - 1.0 + 50 * 420.00 - 1.0  # buy at ask, sell at bid
    wait_until(ib, lambda: _values(ib, "TotalCashValue") == pytest.approx(expected_cash))
    assert gw.cash() == Decimal(str(round(expected_cash, 2)))
    assert _values(ib, "GrossPositionValue") == pytest.approx(100 * 190.0 + 50 * 420.0)

    summary = {
        (v.tag, v.currency): float(v.value)
        for v in ib.accountSummary()
        if v.tag in ("NetLiquidation", "TotalCashValue", "BuyingPower")
    }
    assert summary[("TotalCashValue", "USD")] == pytest.approx(expected_cash)
    assert summary[("NetLiquidation", "USD")] == pytest.approx(expected_cash + 19000 - 21000)


def test_negative_cash_and_futures(gw, connect):
    ib = connect(gw)
    [nvda] = ib.qualifyContracts(Stock("NVDA", "SMART", "USD"))
    trade = ib.placeOrder(nvda, MarketOrder("BUY", 10_000))  # > cash at 120/share
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", timeout=15)
    wait_until(ib, lambda: _values(ib, "TotalCashValue") < 0)
    assert gw.cash() < 0
    es = ib.reqContractDetails(Future("ES", exchange="CME"))[0].contract
    fut = ib.placeOrder(es, MarketOrder("SELL", 2))
    wait_until(ib, lambda: fut.isDone())
    [pos] = [p for p in ib.positions() if p.contract.conId == es.conId]
    assert pos.position == -2 and pos.avgCost == pytest.approx(fut.orderStatus.avgFillPrice * 50 - 2.25, abs=0.01)
    assert fut.fills[0].commissionReport.commission == 4.5


def test_pnl_and_pnl_single(gw, connect):
    ib = connect(gw)
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    pnl = ib.reqPnL("DU1234567")
    single = ib.reqPnLSingle("DU1234567", "", 265598)
    wait_until(ib, lambda: pnl.unrealizedPnL == 0 and single.position == 0)
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 100))
    wait_until(ib, lambda: trade.isDone())
    gw.set_price("AAPL", "200.00")
    # unrealized = (200 - (190.01 + 0.01)) * 100
    wait_until(ib, lambda: single.unrealizedPnL == pytest.approx(998.0), what="pnlSingle update")
    wait_until(ib, lambda: pnl.unrealizedPnL == pytest.approx(998.0), what="pnl update")
    assert single.position == 100 and single.value == pytest.approx(20000.0)
    sell = ib.placeOrder(aapl, MarketOrder("SELL", 100))
    wait_until(ib, lambda: sell.isDone() and sell.fills and sell.fills[0].commissionReport.execId)
    # sold at the bid (200.00): realized = (200 - 190.02) * 100 - 1 commission
    assert sell.fills[0].commissionReport.realizedPNL == pytest.approx(997.0)
    wait_until(ib, lambda: pnl.realizedPnL == pytest.approx(997.0))
    wait_until(ib, lambda: single.position == 0)


def test_account_updates_multi_and_positions_multi(gw, connect):
    ib = connect(gw)
    ib.reqAccountUpdatesMulti("DU1234567")
    assert any(v.tag == "NetLiquidation" for v in ib.accountValues())
    [tsla] = ib.qualifyContracts(Stock("TSLA", "SMART", "USD"))
    t = ib.placeOrder(tsla, MarketOrder("SELL", 10))
    wait_until(ib, lambda: t.isDone())
    wait_until(ib, lambda: any(p.contract.conId == 76792991 and p.position == -10 for p in ib.reqPositions()))


def test_a_login_managing_several_accounts(sim_gateway_factory, connect):
    """managedAccounts lists every account; each account request answers for the account it names: the trading
    account's fills show in its own updates only, the others hold their cash and nothing else."""
    gw = sim_gateway_factory(managed_accounts=("DU1234567", "DU7654321"))
    ib = connect(gw, account="DU7654321")  # ib_async subscribes account updates for this one
    assert ib.managedAccounts() == ["DU1234567", "DU7654321"]
    [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    buy = ib.placeOrder(aapl, MarketOrder("BUY", 10))
    wait_until(ib, lambda: buy.isDone() and ib.positions("DU1234567"))
    ib.sleep(0.5)  # the account values go out in a batch after a fill
    assert ib.portfolio() == [] and ib.positions("DU7654321") == []
    updates = {(v.account, v.tag, v.currency): v.value for v in ib.accountValues() if v.modelCode == ""}
    assert float(updates[("DU7654321", "TotalCashValue", "USD")]) == 1_000_000
    assert float(updates[("DU1234567", "TotalCashValue", "USD")]) < 1_000_000  # its multi updates follow the fill
    summary = {(v.account, v.tag) for v in ib.accountSummary() if v.tag == "NetLiquidation"}
    assert summary == {("DU1234567", "NetLiquidation"), ("DU7654321", "NetLiquidation")}
    other = ib.reqPnL("DU7654321")
    wait_until(ib, lambda: other.dailyPnL == other.dailyPnL)  # not NaN: answered
    assert (other.dailyPnL, other.unrealizedPnL) == (0, 0)
    with pytest.raises(ValueError, match="managed_accounts"):
        sim_gateway_factory(managed_accounts=("DU7654321",))
