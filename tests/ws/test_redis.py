"""CHANNEL_LAYER_URL=redis://...: quotes and ledger announcements go through a real Redis server."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis

from ibkrgw.web.ws import shared_channel_layer
from marketdata.groups import quote_group_name
from tests.ws.conftest import connected, eventually, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

AAPL = 265598


def _group_size(url: str, group: str) -> int:
    # channels-redis keeps a group as a sorted set of channel names under "asgi:group:<name>".
    return redis.Redis.from_url(url).zcard(f"asgi:group:{group}")


async def test_quotes_reach_consumers_through_their_redis_group(ib_runtime, sim_gateway, ws_key, redis_layer):
    assert shared_channel_layer()
    sim_gateway.pause_market()
    first = await connected("/ws/quotes/", ws_key)
    second = await connected("/ws/quotes/", ws_key)
    for ws in (first, second):
        await ws.send_json_to({"action": "subscribe", "symbols": ["AAPL"]})
        await receive_until(ws, lambda f: f["type"] == "subscribed")
    assert _group_size(redis_layer, quote_group_name(AAPL)) == 2
    assert ib_runtime.worker.subscription_count() == 1

    await asyncio.to_thread(sim_gateway.set_price, "AAPL", Decimal("187.77"))
    for ws in (first, second):
        await receive_until(ws, lambda f: f["type"] == "quote" and f["last"] == "187.77")

    await first.send_json_to({"action": "unsubscribe", "symbols": ["AAPL"]})
    await receive_until(first, lambda f: f["type"] == "unsubscribed")
    assert _group_size(redis_layer, quote_group_name(AAPL)) == 1
    await asyncio.to_thread(sim_gateway.set_price, "AAPL", Decimal("187.88"))
    await receive_until(second, lambda f: f["type"] == "quote" and f["last"] == "187.88")
    assert await first.receive_nothing(timeout=1.0)
    await first.disconnect()
    await second.disconnect()
    await eventually(lambda: _group_size(redis_layer, quote_group_name(AAPL)) == 0, message="group emptied")
    await eventually(lambda: ib_runtime.worker.subscription_count() == 0, message="broker unsubscribe")


@pytest.mark.slow
async def test_an_idle_consumer_survives_on_the_redis_layer(ws_key, redis_layer):
    ws = await connected("/ws/quotes/", ws_key)
    await asyncio.sleep(7)  # longer than both 5 s timeouts above
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    await ws.disconnect()
