"""Contracts, quotes and bars over REST, against the simulated gateway over real TCP."""

from decimal import Decimal

import pytest

from marketdata.models import ContractLookup

pytestmark = pytest.mark.django_db(transaction=True)


def test_contract_resolves_stock_with_its_con_id(ib_runtime, read_client):
    response = read_client.get("/api/v1/contracts/", {"symbol": "AAPL"})
    assert response.status_code == 200, response.content
    (contract,) = response.json()
    assert contract["con_id"] == 265598
    assert contract["sec_type"] == "STK"
    assert contract["currency"] == "USD"
    assert contract["min_tick"] == "0.01"


def test_contract_lookup_is_cached_in_the_database(ib_runtime, read_client, sim_gateway):
    read_client.get("/api/v1/contracts/", {"symbol": "MSFT"})
    assert ContractLookup.objects.count() == 1
    # With the gateway gone, the cached resolution still answers.
    ib_runtime.worker.state = "reconnecting"
    try:
        response = read_client.get("/api/v1/contracts/", {"symbol": "MSFT"})
    finally:
        ib_runtime.worker.state = "connected"
    assert response.status_code == 200
    assert response.json()[0]["con_id"] == 272093


@pytest.mark.parametrize(
    ("params", "sec_type"),
    [
        ({"symbol": "SPY"}, "STK"),
        ({"symbol": "EUR.USD", "sec_type": "CASH"}, "CASH"),
        ({"symbol": "SPX", "sec_type": "IND"}, "IND"),
        ({"symbol": "BTC", "sec_type": "CRYPTO", "exchange": "PAXOS"}, "CRYPTO"),
        ({"symbol": "VFIAX", "sec_type": "FUND"}, "FUND"),
        ({"symbol": "ES", "sec_type": "FUT", "exchange": "CME"}, "FUT"),
        ({"symbol": "US-T", "sec_type": "BOND"}, "BOND"),
    ],
)
def test_every_security_type_resolves(ib_runtime, read_client, params, sec_type):
    response = read_client.get("/api/v1/contracts/", params)
    assert response.status_code == 200, response.content
    contracts = response.json()
    assert len(contracts) == 1
    assert contracts[0]["sec_type"] == sec_type
    assert contracts[0]["con_id"] > 0


def test_future_without_expiry_resolves_to_the_front_month(ib_runtime, read_client, sim_gateway):
    front = read_client.get("/api/v1/contracts/", {"symbol": "ES", "sec_type": "FUT", "exchange": "CME"}).json()[0]
    all_expiries = sorted(
        i.last_trade_date for i in sim_gateway.market.instruments.values() if i.symbol == "ES" and i.sec_type == "FUT"
    )
    assert front["expiry"] == all_expiries[0]
    quote = read_client.get("/api/v1/quotes/ES/", {"sec_type": "FUT", "exchange": "CME"})
    assert quote.status_code == 200
    assert quote.json()["con_id"] == front["con_id"]


def test_option_resolves_with_expiry_strike_and_right(ib_runtime, read_client):
    chain = read_client.get("/api/v1/contracts/", {"symbol": "AAPL", "sec_type": "OPT"})
    assert chain.status_code == 200
    options = chain.json()
    assert len(options) > 10  # the whole chain
    one = options[0]
    response = read_client.get(
        "/api/v1/contracts/",
        {"symbol": "AAPL", "sec_type": "OPT", "expiry": one["expiry"], "strike": one["strike"], "right": one["right"]},
    )
    assert response.status_code == 200
    assert [c["con_id"] for c in response.json()] == [one["con_id"]]


def test_unknown_symbol_is_404_contract_not_found(ib_runtime, read_client):
    response = read_client.get("/api/v1/quotes/NOPE123/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "contract_not_found"


def test_ambiguous_symbol_is_409_with_candidates(ib_runtime, read_client):
    response = read_client.get("/api/v1/quotes/SHOP/")
    assert response.status_code == 409
    body = response.json()["error"]
    assert body["code"] == "contract_ambiguous"
    assert {c["currency"] for c in body["details"]["candidates"]} == {"USD", "CAD"}
    assert read_client.get("/api/v1/quotes/SHOP/", {"currency": "CAD"}).status_code == 200


def test_quote_returns_the_simulated_prices(ib_runtime, read_client, sim_gateway):
    sim_gateway.pause_market()
    sim_gateway.set_price("AAPL", Decimal("191.25"))
    expected = sim_gateway.quote("AAPL")
    response = read_client.get("/api/v1/quotes/AAPL/")
    assert response.status_code == 200, response.content
    quote = response.json()
    assert Decimal(quote["bid"]) == expected["bid"]
    assert Decimal(quote["ask"]) == expected["ask"]
    assert Decimal(quote["last"]) == expected["last"]
    assert Decimal(quote["bid"]) < Decimal(quote["ask"])
    assert quote["market_data_type"] == 1
    assert quote["delayed"] is False
    assert quote["time"] is not None
    assert quote["source"] == "snapshot"


def test_streamed_quote_is_served_from_the_subscription(ib_runtime, read_client):
    first = read_client.get("/api/v1/quotes/MSFT/", {"stream": "true"})
    assert first.status_code == 200
    assert first.json()["source"] == "stream"
    assert ib_runtime.worker.subscription_count() == 1
    # A plain call now uses the cache too.
    assert read_client.get("/api/v1/quotes/MSFT/").json()["source"] == "stream"


def test_delayed_market_data_is_marked(sim_gateway, transactional_db, read_client, settings):
    from brokers import runtime

    settings.MARKET_DATA_TYPE = 3
    runtime.start(host="127.0.0.1", port=sim_gateway.port, client_id=1)
    try:
        from tests.conftest import wait_for

        wait_for(lambda: runtime.current().worker.reconciled.is_set())
        sim_gateway.no_live_permission.add("TSLA")
        quote = read_client.get("/api/v1/quotes/TSLA/").json()
        assert quote["market_data_type"] == 3
        assert quote["delayed"] is True
        assert quote["last"] is not None
        # Delayed data is asked for, but with a live subscription IB answers with live data.
        live = read_client.get("/api/v1/quotes/AAPL/").json()
        assert (live["market_data_type"], live["delayed"]) == (1, False)
    finally:
        runtime.stop()


def test_bars_return_ohlc_in_utc(ib_runtime, read_client):
    response = read_client.get("/api/v1/bars/SPY/", {"bar_size": "1 hour", "duration": "2 D", "use_rth": "false"})
    assert response.status_code == 200, response.content
    bars = response.json()["bars"]
    assert len(bars) >= 10
    for bar in bars:
        assert Decimal(bar["low"]) <= Decimal(bar["open"]) <= Decimal(bar["high"])
        assert Decimal(bar["low"]) <= Decimal(bar["close"]) <= Decimal(bar["high"])
        assert bar["time"].endswith("Z")
    times = [b["time"] for b in bars]
    assert times == sorted(times)


def test_daily_bars_respect_rth(ib_runtime, read_client):
    response = read_client.get("/api/v1/bars/AAPL/", {"bar_size": "1 day", "duration": "1 M"})
    assert response.status_code == 200
    assert 15 <= len(response.json()["bars"]) <= 23  # trading days in a month


def test_bad_bar_size_is_400_invalid_request(ib_runtime, read_client):
    response = read_client.get("/api/v1/bars/AAPL/", {"bar_size": "7 parsecs"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "bar_size" in response.json()["error"]["details"]["fields"]


def test_unknown_query_parameter_is_rejected(ib_runtime, read_client):
    response = read_client.get("/api/v1/quotes/AAPL/", {"sectype": "STK"})
    assert response.status_code == 400
    assert "sectype" in response.json()["error"]["details"]["fields"]


def test_without_live_permission_the_quote_falls_back_to_delayed_data(ib_runtime, read_client, sim_gateway):
    sim_gateway.no_live_permission.add("TSLA")
    quote = read_client.get("/api/v1/quotes/TSLA/")
    assert quote.status_code == 200, quote.content
    assert quote.json()["market_data_type"] == 3
    assert quote.json()["delayed"] is True
    assert quote.json()["last"] is not None
    # Other symbols stay live.
    assert read_client.get("/api/v1/quotes/AAPL/").json()["market_data_type"] == 1


def test_without_live_permission_and_no_fallback_the_error_says_so(ib_runtime, read_client, sim_gateway, settings):
    settings.DELAYED_DATA_FALLBACK = False
    sim_gateway.no_live_permission.add("TSLA")
    response = read_client.get("/api/v1/quotes/TSLA/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_market_data"
