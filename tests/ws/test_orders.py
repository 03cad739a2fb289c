"""`/ws/orders/`: order and fill events after commit, and resume from the ledger without gap or duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from asgiref.sync import sync_to_async

from audit.models import AuditEntry
from orders.models import Fill
from tests.ws.conftest import TIMEOUT, communicator, connected, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def _order(client_order_id: str, **overrides) -> dict:
    body = {
        "client_order_id": client_order_id,
        "symbol": "AAPL",
        "action": "BUY",
        "quantity": "10",
        "order_type": "MKT",
        "tif": "DAY",
    }
    body.update(overrides)
    return body


async def _place(api_client, client_order_id: str) -> str:
    response = await sync_to_async(api_client.post)("/api/v1/orders/", _order(client_order_id), format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _ledger_seqs_after(seq: int) -> list[int]:
    return list(
        AuditEntry.objects.filter(seq__gt=seq, target_type__in=("order", "fill"))
        .order_by("seq")
        .values_list("seq", flat=True)
    )


async def _events_until_settled(ws, order_id: str) -> list[dict]:
    """Live frames until the order is filled, its commission recorded, and the stream has caught up with
    the ledger (so no late event of this order is still on its way)."""
    frames: list[dict] = []
    while not any(
        f["type"] == "order" and f["order"]["id"] == order_id and f["order"]["status"] == "filled" for f in frames
    ):
        frames.append(await ws.receive_json_from(timeout=TIMEOUT))
    await _settled(order_id)
    last = (await sync_to_async(_ledger_seqs_after)(frames[-1]["seq"]) or [frames[-1]["seq"]])[-1]
    while frames[-1]["seq"] < last:
        frames.append(await ws.receive_json_from(timeout=TIMEOUT))
    return frames


async def _settled(order_id: str) -> None:
    """Wait until the ledger has the order's fill and its commission (its last event)."""
    done = sync_to_async(lambda: Fill.objects.filter(order_id=order_id, commission__isnull=False).exists())
    deadline = time.monotonic() + TIMEOUT
    while not await done():
        if time.monotonic() > deadline:
            pytest.fail("fill and commission not recorded")
        await asyncio.sleep(0.02)


async def test_order_and_fill_events_arrive_after_a_rest_order(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.pause_market()
    ws = await connected("/ws/orders/", ws_key)
    order_id = await _place(api_client, "ws-1")
    frames = await _events_until_settled(ws, order_id)

    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs))  # increasing, no duplicate
    assert frames[0]["type"] == "order" and frames[0]["event"] == "order.submitted"
    assert frames[0]["order"]["client_order_id"] == "ws-1"
    assert {f["event"] for f in frames if f["type"] == "fill"} <= {"fill.recorded", "commission.recorded"}
    # The same JSON shapes as REST.
    rest_order = (await sync_to_async(api_client.get)(f"/api/v1/orders/{order_id}/")).json()
    assert set(frames[0]["order"]) == set(rest_order)
    fill = next(f for f in frames if f["type"] == "fill")  # the first: fill.recorded
    rest_fill = (await sync_to_async(api_client.get)("/api/v1/fills/", {"order_id": order_id})).json()["results"][0]
    assert set(fill) == {"type", "seq", "event", "fill"} and fill["event"] == "fill.recorded"
    assert set(fill["fill"]) == set(rest_fill) and fill["fill"]["exec_id"] == rest_fill["exec_id"]
    # Every frame is an audit entry of the order or its fill, with the entry's seq and event.
    entries = await sync_to_async(lambda: {e.seq: e for e in AuditEntry.objects.filter(seq__in=seqs)})()
    for frame in frames:
        entry = entries[frame["seq"]]
        if frame["type"] == "order":
            assert (entry.target_type, entry.target_id, entry.event) == ("order", order_id, frame["event"])
        else:
            assert (entry.target_type, entry.target_id) == ("fill", frame["fill"]["exec_id"])
    await ws.disconnect()


async def test_resume_replays_exactly_the_missed_events_then_live(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.pause_market()
    first = await connected("/ws/orders/", ws_key)
    order_1 = await _place(api_client, "ws-resume-1")
    seen = await _events_until_settled(first, order_1)
    last_seen = seen[-1]["seq"]
    await first.disconnect()

    # Missed while disconnected: a whole order, its fill and whatever arrives after them.
    order_2 = await _place(api_client, "ws-resume-2")
    await _settled(order_2)
    missed = await sync_to_async(_ledger_seqs_after)(last_seen)
    assert missed

    second = await connected("/ws/orders/", ws_key)
    await second.send_json_to({"action": "resume", "after_seq": last_seen})
    resumed, replayed = await receive_until(second, lambda f: f["type"] == "resumed")
    assert [f["seq"] for f in replayed][: len(missed)] == missed
    assert resumed["replayed"] == len(missed)
    # order_1's late events (after the last one the first client read) count as missed, too.
    assert order_2 in {f["order"]["id"] for f in replayed if f["type"] == "order"}

    # Then live events, strictly after what was replayed.
    order_3 = await _place(api_client, "ws-resume-3")
    live = await _events_until_settled(second, order_3)
    expected = await sync_to_async(_ledger_seqs_after)(last_seen)
    while live[-1]["seq"] < expected[-1]:  # the order may have had more events since
        live.append(await second.receive_json_from(timeout=TIMEOUT))
    all_seqs = [f["seq"] for f in replayed] + [f["seq"] for f in live]
    assert all_seqs == expected  # in order, no gap, no duplicate
    await second.disconnect()


async def test_a_late_resume_never_sends_an_older_event_after_a_newer_one(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.pause_market()
    before = await _place(api_client, "ws-before")
    await _settled(before)
    before_seqs = await sync_to_async(_ledger_seqs_after)(0)

    # Live events first, then a resume from before all of them.
    ws = await connected("/ws/orders/", ws_key)
    seen = await _events_until_settled(ws, await _place(api_client, "ws-during"))
    await ws.send_json_to({"action": "resume", "after_seq": 0})
    refusal, more = await receive_until(ws, lambda f: f["type"] == "error")
    seen += more
    assert refusal["code"] == "resume_too_late"
    sent_after = refusal["details"]["sent_after_seq"]
    assert refusal["details"]["after_seq"] == 0 and before_seqs[-1] <= sent_after < seen[0]["seq"]
    assert "?after_seq=0" in refusal["message"]

    # The stream goes on: every frame the client sees is in seq order, with no gap and no duplicate.
    seen += await _events_until_settled(ws, await _place(api_client, "ws-after"))
    assert all(f["type"] in ("order", "fill") for f in seen)
    seqs = [f["seq"] for f in seen]
    assert seqs == sorted(set(seqs))
    assert seqs == await sync_to_async(_ledger_seqs_after)(sent_after)
    await ws.disconnect()

    # Nothing is lost: reconnecting with ?after_seq=0 delivers every event after 0, in order.
    again = await connected("/ws/orders/?after_seq=0", ws_key)
    resumed, replayed = await receive_until(again, lambda f: f["type"] == "resumed")
    assert [f["seq"] for f in replayed] == await sync_to_async(_ledger_seqs_after)(0) == before_seqs + seqs
    assert resumed["replayed"] == len(replayed)
    await again.disconnect()


async def test_a_client_that_places_an_order_as_soon_as_it_is_connected_receives_all_of_its_events(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key, monkeypatch
):
    # The server is slow to start listening for this socket (a busy event loop): it holds the listening
    # until the order's first events are already in the ledger, or, when the client is not yet told it is
    # connected by then (it cannot place anything), for a second. Either way the client sees every event.
    from orders.publish import OrderHub

    sim_gateway.pause_market()
    placed = asyncio.Event()
    attach = OrderHub.attach

    async def slow_attach(hub, listener):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(placed.wait(), timeout=1.0)
        return await attach(hub, listener)

    monkeypatch.setattr(OrderHub, "attach", slow_attach)
    ws = await connected("/ws/orders/", ws_key)
    order_id = await _place(api_client, "ws-at-once")
    placed.set()
    frames = await _events_until_settled(ws, order_id)
    events = [f["event"] for f in frames if f["type"] == "order"]
    assert events[:2] == ["order.submitted", "order.sent"]
    assert [f["seq"] for f in frames] == await sync_to_async(_ledger_seqs_after)(frames[0]["seq"] - 1)
    await ws.disconnect()


async def test_a_late_resume_that_misses_nothing_is_answered(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.pause_market()
    ws = await connected("/ws/orders/", ws_key)
    live = await _events_until_settled(ws, await _place(api_client, "ws-late-ok"))
    last = live[-1]["seq"]
    # From the last event seen, or from just before the first one: nothing older is missing.
    for after in (last, live[0]["seq"] - 1):
        await ws.send_json_to({"action": "resume", "after_seq": after})
        resumed = await ws.receive_json_from(timeout=TIMEOUT)
        assert resumed == {"type": "resumed", "after_seq": after, "replayed": 0, "last_seq": last}
    await ws.disconnect()


async def test_resuming_in_the_connect_url_replays_then_streams_live(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.pause_market()
    first = await _place(api_client, "ws-url-1")
    await _settled(first)
    last_seen = (await sync_to_async(_ledger_seqs_after)(0))[-1]
    missed_order = await _place(api_client, "ws-url-2")
    await _settled(missed_order)
    missed = await sync_to_async(_ledger_seqs_after)(last_seen)

    ws = await connected(f"/ws/orders/?after_seq={last_seen}", ws_key)
    resumed, replayed = await receive_until(ws, lambda f: f["type"] == "resumed")
    assert [f["seq"] for f in replayed] == missed
    assert resumed == {"type": "resumed", "after_seq": last_seen, "replayed": len(missed), "last_seq": missed[-1]}
    live = await _events_until_settled(ws, await _place(api_client, "ws-url-3"))
    seqs = [f["seq"] for f in replayed + live]
    assert seqs == await sync_to_async(_ledger_seqs_after)(last_seen)  # in order, no gap, no duplicate
    await ws.disconnect()


async def test_an_order_the_broker_rejects_streams_ib_s_code_and_text(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.faults.reject_order("ws-rej", "The order is not accepted.")
    ws = await connected("/ws/orders/", ws_key)
    order_id = await _place(api_client, "ws-rej")

    def explained(frame: dict) -> bool:
        order = frame.get("order") or {}
        return order.get("id") == order_id and any(
            (e["status"], e["code"], e["reason"])
            == ("rejected", "201", "Order rejected - reason:The order is not accepted.")
            for e in order["events"]
        )

    frame, _ = await receive_until(ws, explained)
    assert (frame["type"], frame["order"]["status"]) == ("order", "rejected")
    await ws.disconnect()


@pytest.mark.parametrize(
    "query",
    ["after_seq=x", "after_seq=-1", "after_seq=", "after_seq=1&after_seq=2", "after_seq=%D9%A3", "after_seq=1e3"],
)
async def test_a_bad_after_seq_in_the_connect_url_closes_with_4400(ws_key, query):
    ws = communicator(f"/ws/orders/?{query}", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "invalid_request" and "after_seq" in error["details"]["fields"], error
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["type"] == "websocket.close" and closing["code"] == 4400


async def test_resume_with_a_bad_after_seq_is_invalid_request_and_the_socket_stays_open(ws_key):
    ws = await connected("/ws/orders/", ws_key)
    for message in (
        {"action": "resume"},
        {"action": "resume", "after_seq": "x"},
        {"action": "resume", "after_seq": -1},
    ):
        await ws.send_json_to(message)
        error = await ws.receive_json_from(timeout=TIMEOUT)
        assert error["code"] == "invalid_request", error
    await ws.send_json_to({"action": "resume", "after_seq": 0})
    resumed = await ws.receive_json_from(timeout=TIMEOUT)
    assert resumed == {"type": "resumed", "after_seq": 0, "replayed": 0, "last_seq": 0}
    await ws.disconnect()


def _gateway_entry() -> int:
    """A ledger entry that is not an order or fill event (the hub streams none for it)."""
    from django.db import transaction

    from audit import events
    from audit.services import audit_record
    from ibkrgw.actors import Actor

    with transaction.atomic():
        return audit_record(event=events.BROKER_CONNECTED, actor=Actor.system(), target_type="gateway").seq


async def test_resume_beyond_the_ledger_is_invalid_request_not_silence(ws_key):
    ws = await connected("/ws/orders/", ws_key)
    last = await sync_to_async(_gateway_entry)()  # in the ledger, beyond the last event this process streamed
    for beyond in (last + 1, 10**18, 10**4000):
        await ws.send_json_to({"action": "resume", "after_seq": beyond})
        error = await ws.receive_json_from(timeout=TIMEOUT)
        assert error["code"] == "invalid_request" and error["details"]["last_seq"] == last, error
    # A seq the ledger has (seen through another process) is a valid place to resume from.
    await ws.send_json_to({"action": "resume", "after_seq": last})
    resumed = await ws.receive_json_from(timeout=TIMEOUT)
    assert resumed == {"type": "resumed", "after_seq": last, "replayed": 0, "last_seq": last}
    await ws.disconnect()


async def test_an_after_seq_beyond_the_ledger_in_the_connect_url_closes_with_4400(ws_key):
    last = await sync_to_async(_gateway_entry)()
    ws = communicator(f"/ws/orders/?after_seq={last + 1}", key=ws_key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    error = await ws.receive_json_from(timeout=TIMEOUT)
    assert error["code"] == "invalid_request" and error["details"]["last_seq"] == last, error
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing["type"] == "websocket.close" and closing["code"] == 4400
    # The API key may share the query string; a seq the ledger has is a place to resume from.
    ws = communicator(f"/ws/orders/?api_key={ws_key}&after_seq={last}")
    assert (await ws.connect(timeout=TIMEOUT))[0]
    assert await ws.receive_json_from(timeout=TIMEOUT) == {
        "type": "resumed",
        "after_seq": last,
        "replayed": 0,
        "last_seq": last,
    }
    await ws.disconnect()
