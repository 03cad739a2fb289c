"""Several `manage.py mcp` processes at once, as Claude Desktop and an editor with one configuration start them."""

from __future__ import annotations

from contextlib import ExitStack
from decimal import Decimal

import pytest

from brokers.sim.server import SimGateway
from ibkrgw.mcp_server import project_version
from tests.conftest import wait_for
from tests.mcp.conftest import free_port, mcp_env, payload, stdio_mcp

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_stdio_sessions_with_one_configuration_both_answer_quotes(django_db_setup, mcp_sim: SimGateway):
    env = mcp_env(mcp_sim, client_id=31)
    with ExitStack() as stack:
        first = stack.enter_context(stdio_mcp(env))
        second = stack.enter_context(stdio_mcp(env))
        for client in (first, second):
            quote = client.json("get_quote", {"symbol": "AAPL"})
            assert quote["con_id"] == mcp_sim.con_id("AAPL")
            assert Decimal(quote["bid"]) <= Decimal(quote["ask"])
        ids = {client.json("get_health")["gateway"]["client_id"] for client in (first, second)}
        assert ids == {31, 32}
        assert ids <= mcp_sim.connected_client_ids()


def test_an_id_held_by_a_connection_elsewhere_is_skipped(django_db_setup, mcp_sim: SimGateway, tmp_path):
    # Separate lock directories: the second process cannot see the first one's claim, as with a
    # connection from another machine. IB's own refusal (error 326) moves it to the next id.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ExitStack() as stack:
        elsewhere = stack.enter_context(stdio_mcp(mcp_env(mcp_sim, client_id=41, TMPDIR=str(tmp_path / "a"))))
        here = stack.enter_context(stdio_mcp(mcp_env(mcp_sim, client_id=41, TMPDIR=str(tmp_path / "b"))))
        assert elsewhere.json("get_health")["gateway"]["client_id"] == 41
        assert here.json("get_health")["gateway"]["client_id"] == 42
        assert here.json("get_quote", {"symbol": "MSFT"})["con_id"] == mcp_sim.con_id("MSFT")


def test_a_clash_with_no_id_left_is_reported_to_the_agent_with_its_cause(django_db_setup, mcp_sim, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ExitStack() as stack:
        stack.enter_context(stdio_mcp(mcp_env(mcp_sim, client_id=45, TMPDIR=str(tmp_path / "a"))))
        stuck = stack.enter_context(
            stdio_mcp(mcp_env(mcp_sim, client_id=45, IB_MCP_CLIENT_ID_COUNT="1", TMPDIR=str(tmp_path / "b")))
        )
        result = stuck.call("get_quote", {"symbol": "AAPL"})
        assert result.is_error
        error = payload(result)["error"]
        assert error["code"] == "broker_unavailable"
        assert "326" in error["message"]
        assert "client id 45" in error["message"]
        assert error["details"]["down_reason"] == "client_id_in_use"
        assert stuck.json("get_health")["gateway"]["down_reason"] == "client_id_in_use"


def test_server_info_carries_the_project_version(django_db_setup, mcp_sim):
    with stdio_mcp(mcp_env(mcp_sim, client_id=47)) as client:
        assert client.server_info.name == "ibkr-gateway"
        assert client.server_info.version == project_version() != ""


def test_the_second_session_outlives_the_first_that_started_the_simulated_gateway(django_db_setup, transactional_db):
    # The default configuration: IB_GATEWAY=sim, and the first server starts the simulated gateway.
    env = mcp_env(None, client_id=35, IB_SIM_PORT=str(free_port()))
    with ExitStack() as first_stack, ExitStack() as second_stack:
        first = first_stack.enter_context(stdio_mcp(env))
        first.json("get_quote", {"symbol": "AAPL"})
        second = second_stack.enter_context(stdio_mcp(env))
        second.json("get_quote", {"symbol": "AAPL"})
        first_stack.close()  # Claude Desktop quits; its server and the simulated gateway it started end
        wait_for(lambda: not second.call("get_quote", {"symbol": "AAPL"}).is_error, timeout=30, message="quotes again")
        assert second.json("get_health")["gateway"]["connected"] is True
