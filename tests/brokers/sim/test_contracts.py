from __future__ import annotations

from datetime import date

from ib_async import ContFuture, Contract, Crypto, Forex, Future, Index, Option, Stock


def test_qualify_every_sec_type(gw, connect):
    ib = connect(gw)
    es_front = ib.reqContractDetails(Future("ES", exchange="CME"))[0].contract
    specs = [
        (Stock("AAPL", "SMART", "USD"), 265598, "STK"),
        (Stock("MSFT", "SMART", "USD"), 272093, "STK"),
        (Stock("SPY", "SMART", "USD"), 756733, "STK"),
        (Stock("TSLA", "SMART", "USD"), 76792991, "STK"),
        (Future("ES", es_front.lastTradeDateOrContractMonth[:6], "CME"), es_front.conId, "FUT"),
        (Forex("EURUSD"), 12087792, "CASH"),
        (Forex("USDJPY"), 15016059, "CASH"),
        (Index("SPX", "CBOE"), 416904, "IND"),
        (Index("NDX", "NASDAQ"), 416843, "IND"),
        (Crypto("BTC", "PAXOS", "USD"), 479624278, "CRYPTO"),
        (Contract(secType="FUND", symbol="VFIAX", exchange="FUNDSERV"), gw.con_id("VFIAX"), "FUND"),
    ]
    qualified = ib.qualifyContracts(*[s for s, _, _ in specs])
    for (spec, con_id, sec_type), q in zip(specs, qualified, strict=True):
        assert q is not None, spec
        assert (q.conId, q.secType) == (con_id, sec_type)
    aapl = qualified[0]
    assert aapl.primaryExchange == "NASDAQ" and aapl.exchange == "SMART" and aapl.currency == "USD"
    assert qualified[5].localSymbol == "EUR.USD" and qualified[5].exchange == "IDEALPRO"


def test_contract_details_fields(gw, connect):
    ib = connect(gw)
    [cd] = ib.reqContractDetails(Stock("AAPL", "SMART", "USD"))
    assert cd.minTick == 0.01 and cd.longName == "APPLE INC" and cd.timeZoneId == "US/Eastern"
    assert cd.stockType == "COMMON" and cd.secIdList[0].value == "US0378331005"
    assert "LMT" in cd.orderTypes.split(",") and "NASDAQ" in cd.validExchanges.split(",")
    [spy] = ib.reqContractDetails(Stock("SPY", "SMART", "USD"))
    assert spy.stockType == "ETF" and spy.contract.primaryExchange == "ARCA"


def test_bond_uses_bond_contract_data(gw, connect):
    ib = connect(gw)
    [cd] = ib.reqContractDetails(Contract(secType="BOND", symbol="US-T"))
    assert cd.contract.secType == "BOND" and cd.cusip == "91282CLW9" and cd.maturity == "20341115"
    [by_cusip] = ib.reqContractDetails(Contract(secType="BOND", secIdType="CUSIP", secId="91282CLW9"))
    assert by_cusip.contract.conId == cd.contract.conId


def test_futures_expiries_are_in_the_future_front_month_first(gw, connect):
    ib = connect(gw)
    for sym, exch, count in (("ES", "CME", 4), ("NQ", "CME", 4), ("CL", "NYMEX", 6)):
        details = ib.reqContractDetails(Future(sym, exchange=exch))
        dates = [d.contract.lastTradeDateOrContractMonth for d in details]
        assert len(dates) == count and dates == sorted(dates)
        assert dates[0] > date.today().strftime("%Y%m%d")
        assert all(d.contract.multiplier for d in details)
    [cont] = ib.qualifyContracts(ContFuture("ES", "CME"))
    assert cont.secType == "CONTFUT"


def test_ambiguous_symbol_returns_several_matches(gw, connect):
    ib = connect(gw)
    details = ib.reqContractDetails(Stock("SHOP"))
    assert sorted((d.contract.primaryExchange, d.contract.currency) for d in details) == [
        ("NYSE", "USD"),
        ("TSE", "CAD"),
    ]
    assert ib.qualifyContracts(Stock("SHOP")) == [None]
    [usd] = ib.qualifyContracts(Stock("SHOP", "SMART", "USD"))
    assert usd.primaryExchange == "NYSE"


def test_unknown_contract_gives_200(gw, connect):
    ib = connect(gw)
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((code, msg))
    assert ib.qualifyContracts(Stock("NOPE", "SMART", "USD")) == [None]
    assert (200, "No security definition has been found for the request") in errors


def test_option_chain_and_option_details(gw, connect):
    ib = connect(gw)
    chains = ib.reqSecDefOptParams("AAPL", "", "STK", 265598)
    smart = next(c for c in chains if c.exchange == "SMART")
    assert smart.tradingClass == "AAPL" and smart.multiplier == "100"
    assert len(smart.expirations) == 4 and 190.0 in smart.strikes and len(smart.strikes) == 11
    exp = smart.expirations[0]
    [opt] = ib.qualifyContracts(Option("AAPL", exp, 190, "C", "SMART"))
    assert opt.conId and opt.multiplier == "100" and opt.right == "C" and opt.strike == 190.0
    puts = ib.reqContractDetails(Option("SPY", exp, right="P", exchange="SMART"))
    assert len(puts) == 11 and all(d.underConId == 756733 for d in puts)
    ticker = ib.reqTickers(opt)[0]
    assert ticker.bid > 0 and ticker.ask > ticker.bid


def test_matching_symbols(gw, connect):
    ib = connect(gw)
    found = ib.reqMatchingSymbols("AAP")
    assert found and found[0].contract.symbol == "AAPL" and "OPT" in found[0].derivativeSecTypes
