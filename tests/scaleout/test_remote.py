"""A follower's RemoteAdapter against an owner's BrokerServer, in one process over the in-memory layer."""

import threading
import time
from decimal import Decimal

import pytest

from brokers.adapter import BrokerHealth, ContractInfo, OrderAck
from brokers.scaleout import follower as follower_side
from brokers.scaleout import protocol
from brokers.scaleout import server as owner_side
from brokers.scaleout.follower import RemoteAdapter
from brokers.scaleout.protocol import BROKER_CHANNEL, RpcLoop
from brokers.scaleout.server import BrokerServer
from ibkrgw.errors import BrokerUnavailable, ErrorCode, GatewayError
from tests.conftest import wait_for

AAPL = ContractInfo(con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD")
HEALTH = BrokerHealth(
    state="connected",
    gateway="127.0.0.1:4002",
    client_id=1,
    server_version=178,
    accounts=("DU1234567",),
    connected_since=None,
    down_since=None,
    last_error="",
    reconnects=0,
    reconciled=True,
)


class FakeAdapter:
    """Just enough of the owner's IbAdapter; records what reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.subscribed: dict[int, int] = {}
        self.release = threading.Event()

    def health(self) -> BrokerHealth:
        self.calls.append("health")
        return HEALTH

    def resolve_contracts(self, *, spec, for_order=False) -> list[ContractInfo]:
        self.calls.append("resolve_contracts")
        return [AAPL]

    def quote_cached(self, *, con_id: int):
        return None

    def bars(self, **kwargs):
        raise GatewayError(ErrorCode.PACING_VIOLATION, "wait", http_status=429, details={"retry_after_s": 7})

    def order_place(self, *, request) -> OrderAck:
        self.calls.append("order_place")
        self.release.wait(5)  # an owner stuck (or dying) after it accepted the call
        return OrderAck(broker_order_id=1, perm_id=None, status="Submitted", client_id=1)

    def quote_snapshot(self, *, contract, for_order=False):
        self.release.wait(5)

    def quote_subscribe(self, *, contract: ContractInfo) -> None:
        self.subscribed[contract.con_id] = self.subscribed.get(contract.con_id, 0) + 1

    def quote_unsubscribe(self, *, con_id: int) -> None:
        self.subscribed[con_id] -= 1


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(follower_side, "ACCEPT_WITHIN_S", 0.3)
    monkeypatch.setattr(follower_side, "TRANSIT_S", 0.3)
    monkeypatch.setattr(follower_side, "REPLY_MARGIN_S", 0.2)
    monkeypatch.setattr(follower_side, "SYNC_EVERY_S", 0.1)
    monkeypatch.setattr(owner_side, "SYNC_EVERY_S", 0.1)
    monkeypatch.setattr(owner_side, "FOLLOWER_TTL_S", 0.5)


@pytest.fixture
def rpc(fast):
    loop = RpcLoop()
    yield loop
    loop.stop()


@pytest.fixture
def owner(rpc):
    adapter = FakeAdapter()
    server = BrokerServer(rpc, adapter=adapter, orders_allowed=lambda: True, server_id="owner-1")
    yield adapter
    adapter.release.set()
    server.stop()


def follower(rpc, timeout: float = 1.0) -> RemoteAdapter:
    return RemoteAdapter(rpc, timeout=timeout, follower_id="follower-1", gateway="127.0.0.1:4002")


def test_calls_return_the_owners_answers(rpc, owner):
    adapter = follower(rpc)
    assert adapter.resolve_contracts(spec=None) == [AAPL]
    assert adapter.quote_cached(con_id=1) is None
    assert adapter.orders_allowed() is True
    assert adapter.managed_accounts() == ("DU1234567",)
    assert adapter.client_id == 1
    assert adapter.owner_id == "owner-1"


def test_health_is_cached_briefly(rpc, owner):
    adapter = follower(rpc)
    adapter.health()
    adapter.health()
    assert owner.calls.count("health") == 1


def test_owner_errors_arrive_with_code_status_and_details(rpc, owner):
    with pytest.raises(GatewayError) as caught:
        follower(rpc).bars(contract=AAPL, bar_size="1 min", duration="1 D", what_to_show="TRADES", use_rth=True)
    assert (caught.value.code, caught.value.http_status, caught.value.details) == (
        ErrorCode.PACING_VIOLATION,
        429,
        {"retry_after_s": 7},
    )


def test_without_an_owner_calls_fail_fast_with_503(rpc):
    adapter = follower(rpc, timeout=10)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        adapter.order_place(request=None)
    assert caught.value.http_status == 503
    assert caught.value.code == ErrorCode.BROKER_UNAVAILABLE
    assert time.monotonic() - started < 2  # the acceptance window, not the 10 s call timeout
    assert adapter.orders_allowed() is False
    assert adapter.health().state == "owner_unreachable"


def test_calls_past_their_deadline_are_never_started(rpc, owner):
    # A call queued while no owner ran (e.g. during a takeover) must not be placed later.
    message = {"type": "broker.call", "id": "x", "method": "order_place", "kwargs": protocol.encode({"request": None})}
    rpc.submit(rpc.layer.send(BROKER_CHANNEL, {**message, "reply_to": None, "deadline": time.time() - 1})).result(2)
    follower(rpc).orders_allowed()  # a later call is served: the stale one was read and dropped
    assert "order_place" not in owner.calls


def test_an_order_accepted_but_unanswered_is_of_unknown_outcome(rpc, owner):
    with pytest.raises(GatewayError) as caught:
        follower(rpc, timeout=0.3).order_place(request=None)
    # Not BrokerUnavailable: the order service records it `unknown` (reconciliation decides), not `rejected`.
    assert not isinstance(caught.value, BrokerUnavailable)
    assert (caught.value.code, caught.value.http_status) == (ErrorCode.BROKER_TIMEOUT, 504)
    assert owner.calls == ["order_place"]


def test_a_read_accepted_but_unanswered_is_a_broker_timeout(rpc, owner):
    with pytest.raises(BrokerUnavailable) as caught:
        follower(rpc, timeout=0.3).quote_snapshot(contract=AAPL)
    assert (caught.value.code, caught.value.http_status) == (ErrorCode.BROKER_TIMEOUT, 504)


def test_quote_watchers_of_a_follower_hold_one_subscription_in_the_owner(rpc, owner):
    adapter = follower(rpc)
    adapter.quote_subscribe(contract=AAPL)
    adapter.quote_subscribe(contract=AAPL)
    wait_for(lambda: owner.subscribed.get(AAPL.con_id) == 1, message="owner subscribed once")
    adapter.quote_unsubscribe(con_id=AAPL.con_id)
    time.sleep(0.3)
    assert owner.subscribed[AAPL.con_id] == 1  # one watcher left in the follower
    adapter.quote_unsubscribe(con_id=AAPL.con_id)
    wait_for(lambda: owner.subscribed[AAPL.con_id] == 0, message="owner unsubscribed")


def test_a_follower_that_goes_silent_loses_its_subscriptions(rpc, owner):
    adapter = follower(rpc)
    adapter.quote_subscribe(contract=AAPL)
    wait_for(lambda: owner.subscribed.get(AAPL.con_id) == 1, message="subscribed")
    adapter.close()  # the follower process died: no more syncs
    wait_for(lambda: owner.subscribed[AAPL.con_id] == 0, message="released after FOLLOWER_TTL_S")


def test_a_new_owner_learns_the_watch_list_from_the_next_sync(rpc):
    first = FakeAdapter()
    server = BrokerServer(rpc, adapter=first, orders_allowed=lambda: True, server_id="owner-1")
    adapter = follower(rpc)
    adapter.quote_subscribe(contract=AAPL)
    wait_for(lambda: first.subscribed.get(AAPL.con_id) == 1, message="subscribed")
    server.stop()  # the owner died; another process took the lease
    successor = FakeAdapter()
    server = BrokerServer(rpc, adapter=successor, orders_allowed=lambda: True, server_id="owner-2")
    try:
        wait_for(lambda: successor.subscribed.get(AAPL.con_id) == 1, message="successor subscribed")
        assert adapter.orders_allowed()
        assert adapter.owner_id == "owner-2"
    finally:
        server.stop()


class FakeWorker:
    def __init__(self) -> None:
        self.listeners: list = []

    def add_quote_listener(self, listener) -> None:
        self.listeners.append(listener)

    def remove_quote_listener(self, listener) -> None:
        self.listeners.remove(listener)


def test_ticks_of_contracts_followers_watch_are_relayed_to_their_group(rpc):
    from brokers.adapter import Quote

    worker = FakeWorker()
    server = BrokerServer(
        rpc,
        adapter=FakeAdapter(),
        orders_allowed=lambda: True,
        server_id="owner-1",
        worker=worker,
        publication=lambda q: (f"quotes.{q.con_id}", {"type": "quote.update", "last": str(q.last)}),
    )
    member = rpc.submit(rpc.layer.new_channel("test")).result(2)
    rpc.submit(rpc.layer.group_add(f"quotes.{AAPL.con_id}", member)).result(2)
    tick = Quote(265598, "AAPL", None, None, Decimal("190.5"), *[None] * 7, time=None, market_data_type=1)
    try:
        worker.listeners[0](tick)  # nobody watches AAPL through the owner yet: not relayed
        adapter = follower(rpc)
        adapter.quote_subscribe(contract=AAPL)
        wait_for(lambda: AAPL.con_id in server._relayed, message="follower watch registered")
        worker.listeners[0](tick)
        received = rpc.submit(rpc.layer.receive(member)).result(2)
        assert received == {"type": "quote.update", "last": "190.5"}
    finally:
        server.stop()
    assert worker.listeners == []
