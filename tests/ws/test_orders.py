"""`/ws/orders/`: order and fill events after commit, and resume from the ledger without gap or duplicate."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from audit.models import AuditEntry
from orders.models import Fill
from tests.ws.conftest import TIMEOUT, connected, receive_until

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


async def test_resume_does_not_repeat_events_already_sent_live(
    ib_runtime, api_client, sim_gateway, orders_enabled, ws_key
):
    sim_gateway.pause_market()
    before = await _place(api_client, "ws-before")
    await _settled(before)
    before_seqs = await sync_to_async(_ledger_seqs_after)(0)

    ws = await connected("/ws/orders/", ws_key)
    during = await _place(api_client, "ws-during")
    live = await _events_until_settled(ws, during)
    await ws.send_json_to({"action": "resume", "after_seq": 0})
    resumed, replayed = await receive_until(ws, lambda f: f["type"] == "resumed")
    # Only what happened before the connection; the live events are not sent twice.
    assert [f["seq"] for f in replayed] == before_seqs
    assert not {f["seq"] for f in replayed} & {f["seq"] for f in live}
    await ws.disconnect()


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
