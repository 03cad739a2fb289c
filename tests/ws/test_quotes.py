"""`/ws/quotes/` over real websocket connections to the ASGI application, against the simulated gateway."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import pytest

from marketdata.consumers import QuoteStreamConsumer
from tests.ws.conftest import TIMEOUT, communicator, connected, eventually, receive_until, sim_subscriptions

pytestmark = pytest.mark.django_db(transaction=True)

AAPL = 265598
QUOTE_KEYS = {
    "type",
    "symbol",
    "con_id",
    "bid",
    "ask",
    "last",
    "bid_size",
    "ask_size",
    "volume",
    "time",
    "age_ms",
    "market_data_type",
    "stale",
}


def _is_quote(last: str | None = None):
    return lambda f: f["type"] == "quote" and (last is None or f["last"] == last)


async def _set_price(sim, symbol: str, price: str) -> None:
    await asyncio.to_thread(sim.set_price, symbol, Decimal(price))


async def _subscribe(ws, *symbols: str) -> dict:
    await ws.send_json_to({"action": "subscribe", "symbols": list(symbols)})
    ack, _ = await receive_until(ws, lambda f: f["type"] == "subscribed")
    return ack


async def test_ticks_arrive_after_subscribe_and_stop_after_unsubscribe(ib_runtime, sim_gateway, ws_key):
    sim_gateway.pause_market()
    ws = await connected("/ws/quotes/", ws_key)
    ack = await _subscribe(ws, "AAPL")
    assert [(c["symbol"], c["con_id"]) for c in ack["contracts"]] == [("AAPL", AAPL)]

    await _set_price(sim_gateway, "AAPL", "191.25")
    quote, _ = await receive_until(ws, _is_quote("191.25"))
    assert set(quote) == QUOTE_KEYS
    assert quote["symbol"] == "AAPL" and quote["con_id"] == AAPL and quote["stale"] is False
    assert Decimal(quote["bid"]) < Decimal(quote["ask"])  # Decimals travel as strings, as in REST
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", quote["time"])
    assert isinstance(quote["age_ms"], int)

    await ws.send_json_to({"action": "unsubscribe", "symbols": ["AAPL"]})
    ack, _ = await receive_until(ws, lambda f: f["type"] == "unsubscribed")
    assert [c["con_id"] for c in ack["contracts"]] == [AAPL]
    # The last watcher left: the broker subscription is cancelled.
    await eventually(lambda: ib_runtime.worker.subscription_count() == 0, message="broker unsubscribe")
    await eventually(lambda: sim_subscriptions(sim_gateway, AAPL) == 0, message="sim cancel")
    await _set_price(sim_gateway, "AAPL", "192.50")
    assert await ws.receive_nothing(timeout=1.0)
    await ws.disconnect()


async def test_two_clients_on_one_symbol_make_one_broker_subscription(ib_runtime, sim_gateway, ws_key):
    sim_gateway.pause_market()
    first = await connected("/ws/quotes/", ws_key)
    second = await connected("/ws/quotes/", ws_key)
    await _subscribe(first, "AAPL")
    await _subscribe(second, "AAPL")
    worker = ib_runtime.worker
    await eventually(lambda: worker.watchers(AAPL) == 2, message="two watchers")
    assert worker.subscription_count() == 1
    # The gateway's own view: one reqMktData (the request may still be on its way).
    await eventually(lambda: sim_subscriptions(sim_gateway, AAPL) == 1, message="one sim subscription")
    assert sim_subscriptions(sim_gateway, AAPL) == 1

    await _set_price(sim_gateway, "AAPL", "188.10")
    for ws in (first, second):
        await receive_until(ws, _is_quote("188.1"))

    await first.disconnect()
    await eventually(lambda: worker.watchers(AAPL) == 1, message="one watcher left")
    assert sim_subscriptions(sim_gateway, AAPL) == 1
    await _set_price(sim_gateway, "AAPL", "188.20")
    await receive_until(second, _is_quote("188.2"))

    await second.disconnect()  # a disconnect releases the subscription like an unsubscribe
    await eventually(lambda: worker.subscription_count() == 0, message="broker unsubscribe")
    await eventually(lambda: sim_subscriptions(sim_gateway, AAPL) == 0, message="sim cancel")


async def test_contract_specs_subscribe_like_rest(ib_runtime, sim_gateway, ws_key):
    ws = await connected("/ws/quotes/", ws_key)
    await ws.send_json_to({"action": "subscribe", "contracts": [{"symbol": "SHOP", "currency": "CAD"}]})
    ack, _ = await receive_until(ws, lambda f: f["type"] == "subscribed")
    assert [(c["symbol"], c["currency"]) for c in ack["contracts"]] == [("SHOP", "CAD")]
    await receive_until(ws, _is_quote())  # the first tick after reqMktData carries the full quote
    await ws.disconnect()


async def test_unknown_and_ambiguous_symbols_get_rest_error_codes_and_the_socket_stays_open(ib_runtime, ws_key):
    ws = await connected("/ws/quotes/", ws_key)
    await ws.send_json_to({"action": "subscribe", "symbols": ["NOPE123", "SHOP", "AAPL"]})
    not_found = await ws.receive_json_from(timeout=TIMEOUT)
    assert not_found["type"] == "error" and not_found["code"] == "contract_not_found"
    assert not_found["details"]["query"] == {"symbol": "NOPE123"}
    ambiguous = await ws.receive_json_from(timeout=TIMEOUT)
    assert ambiguous["code"] == "contract_ambiguous"
    assert {c["currency"] for c in ambiguous["details"]["candidates"]} == {"USD", "CAD"}
    ack = await ws.receive_json_from(timeout=TIMEOUT)  # the contracts that did resolve are subscribed
    assert ack["type"] == "subscribed" and [c["symbol"] for c in ack["contracts"]] == ["AAPL"]
    await ws.send_json_to({"action": "ping"})
    await receive_until(ws, lambda f: f["type"] == "pong")
    await ws.disconnect()


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("this is not json", None),
        ('["subscribe"]', None),
        ('{"action": "dance"}', None),
        ('{"action": "subscribe", "symbols": "AAPL"}', "symbols"),
        ('{"action": "subscribe"}', "symbols"),
        ('{"action": "subscribe", "symbols": ["AAPL"], "extra": 1}', "extra"),
        ('{"action": "subscribe", "contracts": [{"symbol": "AAPL", "sec_type": "NOPE"}]}', "contracts"),
        ('{"action": "subscribe", "symbols": [' + ",".join(f'"S{i}"' for i in range(101)) + "]}", "symbols"),
    ],
)
async def test_a_bad_message_gets_an_error_frame_and_the_socket_stays_open(ws_key, message, field):
    ws = await connected("/ws/quotes/", ws_key)
    await ws.send_to(text_data=message)
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["type"] == "error" and error["code"] == "invalid_request", error
    assert set(error) == {"type", "code", "message", "details"}
    if field:
        assert field in error["details"]["fields"]
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await ws.disconnect()


def _stalling(application, *, stall_quotes_for: float | None):
    """The ASGI app behind a transport that applies backpressure: after the subscribe acknowledgement,
    every quote frame takes `stall_quotes_for` seconds to go out (None: forever, a client that never reads)."""

    async def app(scope, receive, send):
        async def slow_send(message):
            if message.get("type") == "websocket.send" and '"type":"quote"' in (message.get("text") or ""):
                await asyncio.sleep(1e9 if stall_quotes_for is None else stall_quotes_for)
            await send(message)

        await application(scope, receive, slow_send)

    return app


async def test_a_stalled_client_does_not_slow_another_and_is_dropped(ib_runtime, sim_gateway, ws_key, monkeypatch):
    from ibkrgw.asgi import application

    monkeypatch.setattr(QuoteStreamConsumer, "max_send_s", 1.0)
    sim_gateway.pause_market()
    stalled = await connected("/ws/quotes/", ws_key, application=_stalling(application, stall_quotes_for=None))
    fast = await connected("/ws/quotes/", ws_key)
    await _subscribe(stalled, "AAPL")
    await _subscribe(fast, "AAPL")
    await eventually(lambda: ib_runtime.worker.watchers(AAPL) == 2, message="two watchers")

    for cents in range(10, 30):
        price = f"190.{cents}"
        await _set_price(sim_gateway, "AAPL", price)
        await receive_until(fast, _is_quote(price.rstrip("0")), timeout=TIMEOUT)

    # The stalled one is disconnected (its consumer ends) and its watch is released.
    await eventually(lambda: stalled.future.done(), message="stalled client dropped")
    await eventually(lambda: ib_runtime.worker.watchers(AAPL) == 1, message="stalled watch released")
    await _set_price(sim_gateway, "AAPL", "189.99")
    await receive_until(fast, _is_quote("189.99"))
    await fast.disconnect()


async def test_a_client_that_stays_behind_gets_a_reason_frame_and_close_4008(
    ib_runtime, sim_gateway, ws_key, monkeypatch
):
    from ibkrgw.asgi import application

    monkeypatch.setattr(QuoteStreamConsumer, "max_send_s", 0.5)
    slow = await connected("/ws/quotes/", ws_key, application=_stalling(application, stall_quotes_for=30))
    await _subscribe(slow, "AAPL")
    reason, _ = await receive_until(slow, lambda f: f["type"] == "error", timeout=TIMEOUT + 30)
    assert reason["code"] == "client_too_slow"
    closing = await slow.receive_output(timeout=TIMEOUT)
    assert closing == {"type": "websocket.close", "code": 4008, "reason": ""} or closing["code"] == 4008
    await eventually(lambda: ib_runtime.worker.watchers(AAPL) == 0, message="watch released")


async def test_stale_flag_is_sent_when_the_worker_flags_the_subscription(ib_runtime, sim_gateway, ws_key):
    sim_gateway.pause_market()
    ws = await connected("/ws/quotes/", ws_key)
    await _subscribe(ws, "AAPL")
    await _set_price(sim_gateway, "AAPL", "190.01")
    await receive_until(ws, _is_quote("190.01"))
    # The market goes quiet and the worker's automatic resubscription gets no answer either,
    # so after QUOTE_STALE_AFTER_S the subscription is flagged and stays flagged.
    sim_gateway.faults.never_answer(1)
    ib_runtime.worker.stale_after_s = 1
    stale, _ = await receive_until(ws, lambda f: f["type"] == "quote" and f["stale"])
    assert stale["last"] == "190.01"
    assert ib_runtime.worker.health().stale_subscriptions == ("AAPL",)
    await ws.disconnect()


async def test_no_broker_in_this_process_is_broker_unavailable(ws_key):
    # ib_runtime not started: resolution needs the broker.
    ws = communicator("/ws/quotes/", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.send_json_to({"action": "subscribe", "symbols": ["AAPL"]})
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "broker_unavailable"
    await ws.disconnect()


@pytest.fixture
def three_stream_lines(settings, sim_gateway):
    """An account with 4 market-data lines (the gateway answers a fifth with error 101), one kept for snapshots:
    3 for streams (set before the runtime starts)."""
    sim_gateway.max_market_data_lines = 4
    settings.IB_MARKET_DATA_LINES, settings.MARKET_DATA_LINES_RESERVED = 4, 1


async def test_streams_beyond_the_market_data_lines_are_refused_by_name_and_never_reach_the_broker(
    three_stream_lines, ib_runtime, sim_gateway, ws_key, read_client
):
    """Five contracts asked for with three lines free: three are streamed, the other two get an error frame
    each (`market_data_lines`), and the broker is never asked for more lines than the account has."""
    sim_gateway.pause_market()
    ws = await connected("/ws/quotes/", ws_key)
    await ws.send_json_to({"action": "subscribe", "symbols": ["AAPL", "MSFT", "TSLA", "NVDA", "SPY"]})
    ack, before = await receive_until(ws, lambda f: f["type"] == "subscribed")
    assert [c["symbol"] for c in ack["contracts"]] == ["AAPL", "MSFT", "TSLA"]
    errors = [f for f in before if f["type"] == "error"]
    assert [(f["code"], f["details"]["symbol"]) for f in errors] == [
        ("market_data_lines", "NVDA"),
        ("market_data_lines", "SPY"),
    ]
    await eventually(lambda: ib_runtime.worker.lines_in_use == 3, message="three lines taken")
    await eventually(lambda: sum(len(s.mkt) for s in list(sim_gateway.sessions)) == 3, message="three at the broker")
    health = ib_runtime.worker.health()
    assert (health.stream_lines, health.stream_lines_in_use, health.streams_waiting) == (3, 3, 0)
    # The reserved line still serves snapshots (the prices the order gates check): a REST quote that asks for
    # a stream gets a snapshot instead of a refusal from the broker.
    response = await asyncio.to_thread(read_client.get, "/api/v1/quotes/NVDA/?stream=true")
    assert response.status_code == 200, response.content
    assert response.json()["source"] == "snapshot" and response.json()["last"] is not None
    assert ib_runtime.worker.lines_in_use == 3

    # A line that comes free can be taken again.
    await ws.send_json_to({"action": "unsubscribe", "symbols": ["AAPL"]})
    await receive_until(ws, lambda f: f["type"] == "unsubscribed")
    await eventually(lambda: ib_runtime.worker.lines_in_use == 2, message="AAPL's line back")
    ack = await _subscribe(ws, "SPY")
    assert [c["symbol"] for c in ack["contracts"]] == ["SPY"]
    await eventually(lambda: sim_subscriptions(sim_gateway, 756733) == 1, message="SPY streamed")
    await ws.disconnect()


async def test_a_stream_asked_for_while_every_line_is_taken_waits_for_the_next_free_one(
    three_stream_lines, ib_runtime, sim_gateway, ws_key
):
    """Two clients racing for the last line: the connection's own count decides. The one that finds no line
    is not sent to the broker; it takes the first line that comes free."""
    worker = ib_runtime.worker
    first = await connected("/ws/quotes/", ws_key)
    await _subscribe(first, "AAPL", "MSFT", "TSLA")
    await eventually(lambda: worker.lines_in_use == 3, message="every line taken")
    # As a client that checked a moment before the last line went would: straight to the worker.
    nvda = await asyncio.to_thread(ib_runtime.adapter.resolve_contracts, spec=_spec("NVDA"))
    ib_runtime.adapter.quote_subscribe(contract=nvda[0])
    await eventually(lambda: worker.health().streams_waiting == 1, message="NVDA waiting")
    assert sim_subscriptions(sim_gateway, 4815747) == 0
    await first.send_json_to({"action": "unsubscribe", "symbols": ["MSFT"]})
    await eventually(lambda: sim_subscriptions(sim_gateway, 4815747) == 1, message="NVDA gets MSFT's line")
    assert worker.lines_in_use == 3 and worker.health().streams_waiting == 0
    await first.disconnect()


def _spec(symbol: str):
    from brokers.adapter import ContractSpec

    return ContractSpec(symbol=symbol, sec_type="STK", exchange="SMART", currency="USD")


async def test_lines_another_connection_of_the_deployment_holds_are_left_to_it(
    three_stream_lines, ib_runtime, sim_gateway, ws_key
):
    """IB counts market-data lines per account. Another process with its own IB connection (a separate
    `manage.py mcp`, say) reports holding two of the three: a client here gets one stream and an error frame
    for each other contract. When that process stops reporting, its lines go to the stream that waited."""
    from datetime import timedelta

    from django.utils import timezone

    from brokers.models import MarketDataLineUse
    from brokers.services import market_data_lines_share

    worker = ib_runtime.worker
    other = await MarketDataLineUse.objects.acreate(
        client_id=worker.client_id + 1, holder="elsewhere:1", lines=2, reported_at=timezone.now()
    )
    assert await asyncio.to_thread(market_data_lines_share, worker) == 2
    await eventually(lambda: worker.stream_lines_free() == 1, message="two lines left to the other connection")

    ws = await connected("/ws/quotes/", ws_key)
    await ws.send_json_to({"action": "subscribe", "symbols": ["AAPL", "MSFT", "TSLA"]})
    ack, before = await receive_until(ws, lambda f: f["type"] == "subscribed")
    assert [c["symbol"] for c in ack["contracts"]] == ["AAPL"]
    assert [(f["code"], f["details"]["symbol"]) for f in before if f["type"] == "error"] == [
        ("market_data_lines", "MSFT"),
        ("market_data_lines", "TSLA"),
    ]
    await eventually(lambda: sum(len(s.mkt) for s in list(sim_gateway.sessions)) == 1, message="one at the broker")
    # This connection's own report says what it holds, for the other processes.
    await asyncio.to_thread(market_data_lines_share, worker)
    mine = await MarketDataLineUse.objects.aget(client_id=worker.client_id)
    assert mine.lines == 1

    # A stream that lost the race waits; the other process stops (its report goes stale): the stream gets a line.
    nvda = await asyncio.to_thread(ib_runtime.adapter.resolve_contracts, spec=_spec("NVDA"))
    ib_runtime.adapter.quote_subscribe(contract=nvda[0])
    await eventually(lambda: worker.health().streams_waiting == 1, message="NVDA waiting")
    assert sim_subscriptions(sim_gateway, 4815747) == 0
    other.reported_at = timezone.now() - timedelta(minutes=1)
    await other.asave()
    assert await asyncio.to_thread(market_data_lines_share, worker) == 0
    await eventually(lambda: sim_subscriptions(sim_gateway, 4815747) == 1, message="NVDA streamed")
    health = worker.health()
    assert (health.stream_lines_in_use, health.streams_waiting, health.stream_lines_elsewhere) == (2, 0, 0)
    await ws.disconnect()


async def test_contracts_named_over_the_socket_count_in_the_keys_read_rate_with_rest(ib_runtime, ws_key, settings):
    """Each contract a subscribe names costs the broker a lookup: it counts as one read of the key, in the window
    REST's reads count in, so no client spends the broker's message budget by moving to the websocket."""
    from asgiref.sync import sync_to_async
    from django.test import Client

    settings.API_READ_RATE = "3/min"
    ws = await connected("/ws/quotes/", ws_key)
    ack = await _subscribe(ws, "AAPL", "MSFT")
    assert [c["symbol"] for c in ack["contracts"]] == ["AAPL", "MSFT"]
    rest = Client(HTTP_AUTHORIZATION=f"Api-Key {ws_key}")
    assert (await sync_to_async(rest.get)("/api/v1/quotes/AAPL/")).status_code == 200  # the key's third read

    await ws.send_json_to({"action": "subscribe", "symbols": ["SPY"]})
    refused, seen = await receive_until(ws, lambda f: f["type"] == "error")
    assert refused["code"] == "throttled" and refused["details"]["retry_after_s"] > 0, refused
    assert not [f for f in seen if f["type"] == "subscribed"]
    await ws.send_json_to({"action": "ping"})
    _, seen = await receive_until(ws, lambda f: f["type"] == "pong")  # the socket stays open
    assert not [f for f in seen if f["type"] == "subscribed"]  # and SPY was not subscribed
    throttled = await sync_to_async(rest.get)("/api/v1/quotes/AAPL/")
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "throttled"
    await ws.disconnect()
