"""Account reads of a login that manages several accounts (an advisor's, or a person's with more than one),
against the simulated gateway over TCP with the real ib_async worker."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ib_async import Stock

from brokers import runtime
from tests.conftest import anchor_stock_prices, trade_at_gateway, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
TRADING, OTHER = "DU1234567", "DU7654321"


@pytest.fixture
def two_accounts(sim_gateway_factory, transactional_db):
    """A gateway whose login manages two accounts; AAPL bought in the first."""
    sim = sim_gateway_factory(managed_accounts=(TRADING, OTHER))
    anchor_stock_prices(sim)
    trade_at_gateway(sim.port, Stock("AAPL", "SMART", "USD"), "BUY", 5)
    yield sim
    runtime.stop()


def _start(sim) -> None:
    runtime.start(host="127.0.0.1", port=sim.port, client_id=1)
    rt = runtime.current()
    wait_for(lambda: rt.worker.reconciled.is_set(), message="connect and reconcile")


def test_positions_of_an_account_without_account_updates_are_listed_not_a_500(two_accounts, read_client, settings):
    # IB sends account updates (market price and value) for one account at a time: here the other one's.
    settings.IB_ACCOUNT = OTHER
    _start(two_accounts)
    response = read_client.get(f"/api/v1/account/positions/?account={TRADING}")
    assert response.status_code == 200, response.content
    [position] = response.json()
    assert position["account"] == TRADING and position["contract"]["symbol"] == "AAPL"
    assert Decimal(position["quantity"]) == 5 and Decimal(position["average_cost"]) > 0
    assert read_client.get("/api/v1/account/positions/").json() == []  # the other account holds nothing


def test_without_ib_account_the_default_account_s_positions_have_their_market_value(two_accounts, read_client):
    # No IB_ACCOUNT: the default account is the first managed one, and its positions come with IB's portfolio.
    _start(two_accounts)
    response = read_client.get("/api/v1/account/positions/")
    assert response.status_code == 200, response.content
    [position] = response.json()
    assert position["account"] == TRADING
    assert Decimal(position["market_price"]) > 0
    assert Decimal(position["market_value"]) == 5 * Decimal(position["market_price"])
    assert position["unrealized_pnl"] is not None


@pytest.mark.parametrize("read", ["summary", "positions", "pnl"])
def test_a_configured_account_the_login_does_not_manage_is_refused_not_answered_empty(
    read, two_accounts, read_client, settings
):
    # IB_ACCOUNT names an account of another login (a mistake, or the login changed since): its reads would
    # come back empty, as if the account held nothing.
    settings.IB_ACCOUNT = "DU9999999"
    _start(two_accounts)
    response = read_client.get(f"/api/v1/account/{read}/")
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "account_not_managed"
    assert error["details"] == {"account": "DU9999999", "setting": "IB_ACCOUNT"}
    assert read_client.get(f"/api/v1/account/{read}/?account={OTHER}").status_code == 200
