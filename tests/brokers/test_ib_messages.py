"""What the gateway makes of IB's messages about its own connection, sent by the simulated gateway over TCP
to the real ib_async worker: IB Gateway cut off from IB's servers (1100) and back (1101, 1102)."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _broker_events() -> list[tuple[str, str]]:
    return [(e.event, e.data.get("reason", "")) for e in AuditEntry.objects.filter(event__startswith="broker.")]


def _ups_and_downs() -> list[str]:
    return [event for event, _ in _broker_events() if event in ("broker.connected", "broker.disconnected")]


@pytest.mark.parametrize("restore", [1101, 1102])
def test_a_gateway_cut_off_from_ib_is_a_recorded_outage_until_it_is_back(restore, ib_runtime, read_client, sim_gateway):
    worker = ib_runtime.worker
    sim_gateway.send_connectivity(1100)
    wait_for(lambda: len(_ups_and_downs()) == 2, message="1100 recorded")
    health = read_client.get("/api/v1/health/").json()
    assert health["status"] == "degraded" and health["gateway"]["connected"] is False
    assert health["gateway"]["down_reason"] == "gateway_lost_ib_servers"
    assert health["gateway"]["down_since"] is not None  # down since the 1100, not "never"
    assert _ups_and_downs() == ["broker.connected", "broker.disconnected"]
    assert _broker_events()[-1][1].startswith("1100: ")

    sim_gateway.send_connectivity(restore)
    wait_for(lambda: worker.state == "connected" and worker.reconciled.is_set(), message=f"{restore} handled")
    wait_for(lambda: len(_ups_and_downs()) == 3, message=f"{restore} recorded")
    health = read_client.get("/api/v1/health/").json()
    assert health["status"] == "ok" and health["gateway"]["down_since"] is None
    assert _ups_and_downs() == ["broker.connected", "broker.disconnected", "broker.connected"]


def test_a_socket_lost_while_cut_off_from_ib_keeps_the_outage_on_record(ib_runtime, read_client, sim_gateway):
    """1100, then IB Gateway restarts (as it does when it cannot log back in): the audit log shows one outage,
    from the 1100 to the new connection, never two connections in a row."""
    worker = ib_runtime.worker
    sim_gateway.send_connectivity(1100)
    wait_for(lambda: worker.state == "degraded", message="1100 handled")
    sim_gateway.faults.drop_all_connections()
    wait_for(lambda: worker.reconnects == 1 and worker.reconciled.is_set(), timeout=20, message="reconnected")
    wait_for(lambda: len(_ups_and_downs()) >= 3, message="the reconnect recorded")
    assert _ups_and_downs() == ["broker.connected", "broker.disconnected", "broker.connected"]
    assert read_client.get("/api/v1/health/").json()["status"] == "ok"


def test_the_market_data_lines_of_a_gateway_cut_off_from_ib_stay_reported_as_held(ib_runtime, sim_gateway):
    """IB keeps a connection's market-data subscriptions through 1100 (1102 brings them back as they were; on
    1101 the worker asks again): the deployment's other IB connections must not count those lines as free."""
    from brokers.adapter import ContractSpec
    from brokers.models import MarketDataLineUse
    from brokers.services import market_data_lines_share

    worker, adapter = ib_runtime.worker, ib_runtime.adapter
    (aapl,) = adapter.resolve_contracts(spec=ContractSpec(symbol="AAPL", sec_type="STK", exchange="SMART"))
    adapter.quote_subscribe(contract=aapl)
    wait_for(lambda: worker.lines_in_use == 1, message="one stream line")
    market_data_lines_share(worker)
    assert MarketDataLineUse.objects.get(client_id=worker.client_id).lines == 1

    sim_gateway.send_connectivity(1100)
    wait_for(lambda: worker.state == "degraded", message="1100 handled")
    market_data_lines_share(worker)
    # Before: the report was withdrawn, and another process's waiting streams took the line this one gets back.
    assert list(MarketDataLineUse.objects.values_list("client_id", "lines")) == [(worker.client_id, 1)]

    sim_gateway.send_connectivity(1102)
    wait_for(lambda: worker.state == "connected", message="1102 handled")
    market_data_lines_share(worker)
    assert list(MarketDataLineUse.objects.values_list("client_id", "lines")) == [(worker.client_id, 1)]
    assert sum(len(s.mkt) for s in list(sim_gateway.sessions)) == 1  # the line is still held at IB
